"""What to do with the problems found in a data set: stop with all of them, or keep going.

Readers and validation collect :class:`~pixelwise.data.types.Problem` records instead of
stopping at the first one, so that ``pixelwise inspect`` can list every one of them; training
stops with every error at once (one line when there is one, else a one-line summary with one
line per problem under it), or, with ``--skip-bad``, leaves the samples concerned out and says which.
"""

from __future__ import annotations

import shlex

from ..errors import PixelwiseError
from .types import Problem, plural

# Files named per problem in an error message; ``pixelwise inspect`` lists the rest.
LISTED = 3


def errors(problems: list[Problem]) -> list[Problem]:
    """The problems that stop training (warnings left out)."""
    return [p for p in problems if p.severity == "error"]


def raise_first(problems: list[Problem]) -> None:
    """Raise the first error as a one-line :class:`PixelwiseError`; warnings pass."""
    for p in problems:
        if p.severity == "error":
            raise PixelwiseError(p.message())


def inspect_command(root, format: str | None = None) -> str:
    """The ``pixelwise inspect`` command line that reports on ``root`` in full."""
    given = f" --format {format}" if format and format != "auto" else ""
    return f"pixelwise inspect {shlex.quote(str(root))}{given}"


def raise_all(problems: list[Problem], root, format: str | None = None, skip_bad_helps: bool = True) -> None:
    """Raise every error of ``problems`` in one :class:`PixelwiseError`; warnings pass.

    One error: its one line (naming ``pixelwise inspect`` when it has more files than the line
    shows). Several: a first line that counts them and says what to do, then one line per problem
    with its first files. ``skip_bad_helps``: say that ``--skip-bad`` leaves the files out when
    every error concerns single samples.
    """
    errs = errors(problems)
    if not errs:
        return
    command = inspect_command(root, format)
    if len(errs) == 1:
        p = errs[0]
        more = f" ({command} lists all {len(p.items)})" if len(p.items) > LISTED else ""
        raise PixelwiseError(p.message() + more)
    skip = (
        ", or pass --skip-bad to leave out the files concerned"
        if skip_bad_helps and all(p.skippable for p in errs)
        else ""
    )
    head = f"{root}: {plural(len(errs), 'problem')} in the data; fix them{skip} (full report: {command})"
    raise PixelwiseError("\n".join([head] + [f"  - {p.message()}" for p in errs]))
