"""argparse value types shared by the commands: each turns one command-line word into a checked value.

A bad value raises :class:`argparse.ArgumentTypeError`, which argparse reports with the usage of
the subcommand it belongs to.
"""

from __future__ import annotations

import argparse

from ..errors import PixelwiseError


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def scale_range(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` with 0 < LOW <= HIGH, e.g. ``0.5,2.0``."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected two numbers like 0.5,2.0") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError("expected 0 < low <= high")
    return lo, hi


def scales(text: str) -> tuple[float, ...]:
    """Positive resize factors ``S1,S2,...``, e.g. ``0.75,1,1.25``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected numbers like 0.75,1,1.25") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("scales must be positive")
    return values


def model_arg(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as YAML, e.g. ``decoder_channels=[128,64,32,16,8]``."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError("expected KEY=VALUE, e.g. decoder_channels=[128,64,32,16,8]")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value of {key}") from None


def budget(text: str) -> float:
    """A time budget such as ``90s``, ``20m``, ``2h``, ``1d``, in seconds."""
    from ..training.planner import parse_budget

    try:
        return parse_budget(text)
    except PixelwiseError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
