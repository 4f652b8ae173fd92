"""Argument types for the commands' flags: each checks its value's range as argparse reads it.

A value out of range is a user error: argparse reports it as one line naming the flag and the allowed range
(`harness profile: error: argument --samples: must be an integer of at least 1, got '0'`), and the CLI's parser
exits 3 (see harness/cli.py). Nothing out of range reaches a command's body.
"""
from __future__ import annotations

import argparse
import math
import re
from typing import Callable, Optional


def integer(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An int of at least `minimum`; `meaning` says what a special value means, e.g. '0: every sample'."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an integer of at least {minimum}{f' ({meaning})' if meaning else ''}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def number(minimum: float = 0.0, *, above: bool = False, meaning: str = "") -> Callable[[str], float]:
    """A finite float of at least `minimum` (greater than it, with above=True)."""
    def parse(text: str) -> float:
        try:
            value: Optional[float] = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (above and value == minimum):
            bound = f"greater than {minimum:g}" if above else f"of at least {minimum:g}"
            raise argparse.ArgumentTypeError(
                f"must be a number {bound}{f' ({meaning})' if meaning else ''}, got {text!r}")
        return value
    parse.__name__ = f"number {'>' if above else '>='} {minimum:g}"
    return parse


def run_id(text: str) -> str:
    """A run id: the name of a directory under the reports directory, so one plain name."""
    from harness.core.names import is_valid_name
    if not is_valid_name(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run id: a run id names a directory under the reports directory, so it must be "
            "letters, digits, '_', '-' or '.' (e.g. nightly-2026-01-31)")
    return text


def input_shape(text: str) -> str:
    """NAME=DIMS with every dimension 1 or more (a 0 makes an empty tensor, measured as if it were a model run),
    or NAME=scalar. Returned as given: the command parses it (harness.schema.interface.parse_shape_flag)."""
    from harness.core.errors import ConfigError
    from harness.schema.interface import parse_shape_flag
    try:
        dims = [int(d) for d in re.split(r"[x,]", text.rpartition("=")[2])]
    except ValueError:
        dims = []  # not numbers: parse_shape_flag says what is wrong
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be 1 or more (a 0 makes an empty "
                                         "tensor); NAME=scalar gives a 0-d input")
    try:
        parse_shape_flag(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return text
