"""The `harness` command. Subcommands live in harness.commands.<name>, each with register(subparsers).

Only this module turns HarnessErrors into messages and exit codes (docs/faults.md lists the cases):
0 done; 1 a model or cell failed (or the gate failed), returned by the command itself; 2 infrastructure, where
running again may help (a device, a store, a worker); 3 a user error, where it cannot (a flag, a name, a file:
argparse's own errors too); 130 interrupted; 141 the reader of our output went away (`harness history | head`).
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
#: 128 + SIGPIPE, what a shell reports for a program its pipe's reader left
EXIT_BROKEN_PIPE = 141


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line that exits 3 (a user error, as every other in docs/faults.md), not
    argparse's 2, which this CLI keeps for infrastructure failures a CI job may retry. The whole usage text
    (dozens of flags for profile) is left to --help, which the line names."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _remember_prog(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's parser leaves its prog in the namespace (the innermost wins): an unrecognized flag is
    then reported by `harness profile`, not by `harness`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                sub.set_defaults(_prog=sub.prog)
                _remember_prog(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
    _remember_prog(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        owner = ArgumentParser(prog=getattr(args, "_prog", parser.prog), add_help=False)
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
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
        return EXIT_CONFIG  # no command: a user error
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
    try:
        try:
            code = main()
        finally:
            # Flush here, where a reader that went away (`harness history | head`) can be caught, not at
            # interpreter exit, where it would print "Exception ignored ... BrokenPipeError".
            sys.stdout.flush()
    except BrokenPipeError:
        # As the Python docs' "Note on SIGPIPE" does: nothing more can be written, so point stdout at /dev/null
        # for the interpreter's last flush and end quietly. (Not SIG_DFL for SIGPIPE: that would also kill the
        # process when an SSH connection drops mid-write.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    end_process(code)


if __name__ == "__main__":
    run()
