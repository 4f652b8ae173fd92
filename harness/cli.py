"""The `harness` command. Subcommands live in harness.commands.<name>, each with register(subparsers).

Only this module turns HarnessErrors into messages and exit codes.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import warnings
from typing import List, NoReturn, Optional

from harness import __version__
from harness.core.errors import ConfigError, HarnessError, LibraryMissing
from harness.core.logs import configure_terminal
from harness.core.optional import library_missing

#: order is the order shown in --help
COMMAND_MODULES = ["profile", "targets", "models", "farm", "report", "history", "gate", "init"]

EXIT_ERROR, EXIT_CONFIG, EXIT_INTERRUPTED = 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Edge portability harness: compress a model into variants, convert each to TFLite, ONNX and "
                    "OpenVINO IR, push them to devices over SSH, run them with the device's runtime, and collate "
                    "accuracy, latency, memory and size into reports, scores and a release gate.",
        epilog="Start with `harness profile` (the default model on this machine's CPU). "
               "`harness COMMAND --help` explains each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"harness.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"harness.commands.{name}":
                continue  # a command that is not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_terminal(args.verbose)
    if args.verbose < 2:
        # Library chatter that says nothing about the user's run (tf-keras on .h5, TF-MOT/NNCF deprecations).
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    # Quiet TensorFlow's C++ logging unless asked for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if args.verbose < 2 else "0")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"harness: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except LibraryMissing as exc:
        print(f"harness: missing library: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as exc:
        # Last resort: an optional library imported somewhere no step turned into data. One line, never a traceback.
        print(f"harness: missing library: {library_missing(exc, 'this command')}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("harness: interrupted; every cell finished so far is saved in its run directory", file=sys.stderr)
        return EXIT_INTERRUPTED


def end_process(code: int) -> NoReturn:
    """Exit with `code`, skipping the cycle collections at interpreter shutdown: they walk every object of pandas,
    pyarrow and matplotlib (~0.15 s after each run) only to free memory the process hands back anyway. atexit
    handlers and module teardown still run; nothing of ours leaves a file open in a reference cycle."""
    gc.freeze()
    sys.exit(code)


def run() -> NoReturn:
    """The `harness` console script."""
    end_process(main())


if __name__ == "__main__":
    run()
