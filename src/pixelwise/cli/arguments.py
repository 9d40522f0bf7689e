"""argparse value types shared by the commands: each turns one command-line word into a checked value.

A bad value raises :class:`argparse.ArgumentTypeError`, which argparse reports with the usage of
the subcommand it belongs to.
"""

from __future__ import annotations

import argparse


def whole_number(minimum: int | None = None):
    """An argparse type: a whole number, at least ``minimum`` when given."""

    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return v

    convert.__name__ = "whole number"
    return convert


positive_int = whole_number(1)
positive_int.__doc__ = "A whole number >= 1."


def scales(text: str) -> tuple[float, ...]:
    """Positive resize factors ``S1,S2,...``, e.g. ``0.75,1,1.25``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected numbers like 0.75,1,1.25") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("scales must be positive")
    return values
