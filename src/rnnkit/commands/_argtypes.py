"""argparse ``type=`` converters shared by the subcommands: a bad value is argparse's
one-line usage error, naming the option."""

from __future__ import annotations

import argparse


def _int_at_least(minimum: int, words: str):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {words}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {words}, got {value}")
        return value

    return convert


positive_int = _int_at_least(1, "positive integer")
nonnegative_int = _int_at_least(0, "non-negative integer")


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = nonnegative_float(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value
