"""What to do with the problems found in a data set: stop at the first error, or keep going.

Readers and validation collect :class:`~pixelwise.data.types.Problem` records instead of
stopping at the first one, so that ``pixelwise inspect`` can list every one of them; training
raises the first error as one line (or, with ``--skip-bad``, leaves the samples concerned out
and says which).
"""

from __future__ import annotations

from ..errors import PixelwiseError
from .types import Problem


def errors(problems: list[Problem]) -> list[Problem]:
    """The problems that stop training (warnings left out)."""
    return [p for p in problems if p.severity == "error"]


def raise_first(problems: list[Problem]) -> None:
    """Raise the first error as a one-line :class:`PixelwiseError`; warnings pass."""
    for p in problems:
        if p.severity == "error":
            raise PixelwiseError(p.message())
