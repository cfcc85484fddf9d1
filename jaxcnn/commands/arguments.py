"""argparse ``type=`` checks shared by the commands: argparse names the flag in the error.

Examples:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    >>> _ = parser.add_argument("--top-k", type=at_least(1))
    >>> parser.parse_args(["--top-k", "3"]).top_k
    3
    >>> parser.parse_args(["--top-k", "0"])
    Traceback (most recent call last):
    ...
    argparse.ArgumentError: argument --top-k: 0; valid: an int >= 1
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """A parser of ints >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}; valid: an int >= {minimum}")
        return value

    return parse


def checkpoint(text: str) -> str:
    """``best``, ``latest`` or a step number (what ``CheckpointStore.step_for`` takes)."""
    if text in ("best", "latest") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"{text!r}; valid: best, latest or a step number")
