"""argparse value types shared by the commands: each turns one command-line word into a checked value.

A bad value raises :class:`argparse.ArgumentTypeError`, which argparse reports with the usage of
the subcommand it belongs to.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path


def whole_number(minimum: int | None = None, maximum: int | None = None):
    """An argparse type: a whole number, at least ``minimum`` and at most ``maximum`` when given."""

    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {v}")
        return v

    convert.__name__ = "whole number"
    return convert


def real_number(
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
):
    """An argparse type: a finite number within the bounds given (``minimum``/``maximum`` inclusive,
    ``above``/``below`` exclusive); ``nan`` and ``inf`` are refused."""

    def convert(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        for bound, bad, words in (
            (minimum, lambda b: v < b, "at least"),
            (maximum, lambda b: v > b, "at most"),
            (above, lambda b: v <= b, "above"),
            (below, lambda b: v >= b, "below"),
        ):
            if bound is not None and bad(bound):
                raise argparse.ArgumentTypeError(f"must be {words} {bound:g}, got {v:g}")
        return v

    convert.__name__ = "number"
    return convert


positive_int = whole_number(1)
positive_int.__doc__ = "A whole number >= 1."


def scales(text: str) -> tuple[float, ...]:
    """Positive resize factors ``S1,S2,...``, e.g. ``0.75,1,1.25``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected numbers like 0.75,1,1.25") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError("scales must be positive finite numbers")
    return values


# A class name in a flag: up to 100 printable characters (class files name classes freely).
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")


def class_names(text: str) -> tuple[str, ...]:
    """Class names ``NAME[,NAME]`` (e.g. ``car,person``): none empty, none twice, at most 1000."""
    names = tuple(n.strip() for n in text.split(","))
    if not text.strip() or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"expected class names like car,person, got {text!r}")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0][:40]!r} is not a class name (1 to 100 printable characters)")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a class is named twice in {text!r}")
    if len(names) > 1000:
        raise argparse.ArgumentTypeError(f"at most 1000 class names, got {len(names)}")
    return names


def run_folder(text: str) -> str:
    """A run directory: a folder holding model.json and model.safetensors."""
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: no such folder; give a run directory (model.json + model.safetensors)"
        )
    missing = [n for n in ("model.json", "model.safetensors") if not (p / n).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(f"{text}: no {missing[0]} here; give a run directory of pixelwise train")
    return text
