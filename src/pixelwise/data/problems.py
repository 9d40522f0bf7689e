"""Problems found in a data set: what is wrong, with which files, and what to do about it.

Readers and validation collect problems instead of stopping at the first one, so that
``pixelwise inspect`` can list every one of them; training raises the first error as one line
(or, with ``--skip-bad``, leaves the samples concerned out and says which).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PixelwiseError


def listing(items: list[str], limit: int = 3) -> str:
    """'a, b, c and 12 more' so an error stays one readable line."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return shown + (f" and {rest} more" if rest > 0 else "")


@dataclass
class Problem:
    """One kind of problem and every file that has it.

    ``stems`` are the samples that cannot be used because of it (left out by ``--skip-bad``);
    a problem with ``skippable=False`` concerns the whole data set and always stops training.
    A ``warning`` never stops anything; it is shown by ``inspect`` and printed before training.
    """

    title: str  # "masks differ in size from their images"
    todo: str  # "masks must have exactly the image's height and width"
    items: list[str] = field(default_factory=list)  # one line per file: "path (detail)"
    stems: list[str] = field(default_factory=list)
    severity: str = "error"  # error | warning
    skippable: bool = True
    solo: str = ""  # the whole message when there is exactly one item

    def message(self) -> str:
        """One line: count, title, the first few files, what to do."""
        if len(self.items) == 1 and self.solo:
            return self.solo
        if not self.items:
            return f"{self.title}; {self.todo}"
        return f"{len(self.items)} {self.title}: {listing(self.items)}; {self.todo}"

    def to_dict(self) -> dict:
        return {
            "severity": self.severity,
            "title": self.title,
            "count": len(self.items),
            "files": list(self.items),
            "todo": self.todo,
            "samples": list(self.stems),
            "skippable": self.skippable,
        }


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def raise_first(problems: list[Problem]) -> None:
    """Raise the first error as a one-line :class:`PixelwiseError`; warnings pass."""
    for p in problems:
        if p.severity == "error":
            raise PixelwiseError(p.message())
