"""Classes: names, display colours and the ignore index; the classes YAML file; palettes.

Shared by the data readers (a data set's classes), the bundle (a model's classes) and the
pictures (colours), so it sits below all of them and imports none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import PixelwiseError


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct, deterministic RGB colours for `num_classes` classes.

    Uses the bit-interleaving scheme popularised by Pascal VOC: the bits of the class index are
    dealt round-robin to R, G and B, most significant colour bit first. Class 0 is black and
    colours stay distinct for up to 2**24 classes.

    Returns:
        list of `num_classes` (r, g, b) tuples of ints in [0, 255].
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    palette = []
    for index in range(num_classes):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= (bits & 1) << shift
                bits >>= 1
        palette.append((rgb[0], rgb[1], rgb[2]))
    return palette


@dataclass
class ClassInfo:
    """Class names, display colours and the ignore index of a data set or a trained model."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    ignore_index: int = 255
    things: tuple[int, ...] = ()  # indices of the classes that are countable objects; the others are stuff

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
            "things": [int(t) for t in self.things],
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassInfo:
        return cls(
            names=[str(n) for n in d["names"]],
            colors=[tuple(int(v) for v in c) for c in d["colors"]],
            ignore_index=int(d.get("ignore_index", 255)),
            things=tuple(int(t) for t in d.get("things") or ()),
        )


@dataclass
class ClassesFile:
    """A parsed classes file: the classes, and whether it gave colours that masks may be coded in."""

    info: ClassInfo
    colors_given: bool
    ignore_colors: list[tuple[int, int, int]]
    path: Path
    things_given: bool = False  # the file has a ``things:`` key (an empty list too)


def _color_list(value, path: Path, key: str, count: int | None) -> list[tuple[int, int, int]]:
    ok = (
        isinstance(value, list)
        and (count is None or len(value) == count)
        and all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in value
        )
    )
    if not ok:
        what = (
            f"one [r, g, b] (0..255) per class ({count} classes)" if count is not None else "[r, g, b] values (0..255)"
        )
        raise PixelwiseError(f"{path}: '{key}' must list {what}")
    return [tuple(c) for c in value]


def parse_things(value, names: list[str], ignore_index: int, source: str | Path) -> tuple[int, ...]:
    """The class indices of a ``things:`` list of class names (or integer class indices), sorted.

    An unknown name, an index outside the classes, the ignore index or a class listed twice is a
    one-line :class:`PixelwiseError` naming ``source``.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PixelwiseError(f"{source}: 'things' must be a list of class names, such as [car, person]")
    index = {n: i for i, n in enumerate(names)}
    out: list[int] = []
    for v in value:
        if isinstance(v, int) and not isinstance(v, bool):
            if v == ignore_index:
                raise PixelwiseError(f"{source}: things lists the ignore index {v}; list only classes")
            if not 0 <= v < len(names):
                raise PixelwiseError(f"{source}: things lists {v}, which is no class index (0..{len(names) - 1})")
            i = v
        elif str(v) in index:
            i = index[str(v)]
        else:
            raise PixelwiseError(f"{source}: things lists '{v}', which is not one of the class names")
        if i in out:
            raise PixelwiseError(f"{source}: things lists the class '{names[i]}' twice; list each once")
        out.append(i)
    return tuple(sorted(out))


def read_classes_file(path: str | Path) -> ClassesFile:
    """Parse a classes YAML file.

    Accepted keys: ``names`` (list, required), ``colors`` (list of [r, g, b], optional),
    ``ignore_index`` (int, optional, default 255), ``ignore_color`` ([r, g, b] or a list of them,
    optional: the colour(s) of ignored pixels in colour-coded masks), ``things`` (optional: the
    classes that are countable objects, by name or index; see :func:`parse_things`).
    """
    path = Path(path)
    if not path.is_file():
        raise PixelwiseError(f"{path}: classes file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:  # ValueError: a date YAML cannot build
        raise PixelwiseError(f"{path}: not valid YAML ({e.__class__.__name__}); fix the file") from None
    if isinstance(raw, list):
        raw = {"names": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("names"), list) or not raw["names"]:
        raise PixelwiseError(f"{path}: needs a non-empty list 'names:' of class names")
    names = [str(n) for n in raw["names"]]
    if len(set(names)) != len(names):
        raise PixelwiseError(f"{path}: class names must be unique")
    ignore = raw.get("ignore_index", 255)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 65535:
        raise PixelwiseError(f"{path}: ignore_index must be an integer (usually 255)")
    if ignore < len(names):
        raise PixelwiseError(
            f"{path}: ignore_index {ignore} is also a class index (0..{len(names) - 1}); "
            "use a value outside the classes, such as 255"
        )
    colors = raw.get("colors")
    given = colors is not None
    colors = _color_list(colors, path, "colors", len(names)) if given else default_palette(len(names))
    ignore_colors = raw.get("ignore_color") or []
    if isinstance(ignore_colors, list) and ignore_colors and isinstance(ignore_colors[0], int):
        ignore_colors = [ignore_colors]
    ignore_colors = _color_list(ignore_colors, path, "ignore_color", None) if ignore_colors else []
    things = parse_things(raw.get("things"), names, ignore, path)
    info = ClassInfo(names=names, colors=colors, ignore_index=ignore, things=things)
    return ClassesFile(info, given, ignore_colors, path, things_given="things" in raw)
