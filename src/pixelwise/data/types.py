"""The types every part of the data layer passes around, and the names and limits they share.

A format reader produces a :class:`DataSource` of :class:`Sample` (an image and its mask, or the
shapes a mask is drawn from); validation turns it into a :class:`DataReport`; opening a data set
returns a :class:`FolderDataset`. A :class:`Problem` is what a reader or validation found wrong,
with the files and what to do. :class:`DecodeSpec` says how every mask of a data set is decoded.

This module imports no other module of :mod:`pixelwise.data`, so every one of them can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import ClassInfo, read_classes_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
SPLIT_NAMES = ("train", "val", "test")
# PIL's own bomb warning threshold is 89.5 Mpx; a round 100 Mpx (e.g. 10000 x 10000) is refused by default.
DEFAULT_MAX_PIXELS = 100_000_000


def plural(n: int, word: str, words: str = "") -> str:
    """``n`` and the word in the number it takes: "1 image", "2 images", "1 class", "3 classes"."""
    if n == 1:
        return f"{n} {word}"
    return f"{n:,} {words or (word + 'es' if word.endswith(('s', 'sh', 'ch', 'x')) else word + 's')}"


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
    one: str = ""  # the title for exactly one item ("image cannot be read"); "" = the title

    def heading(self) -> str:
        """The count and the title in the number it takes: "1 image cannot be read", "3 images cannot be read"."""
        n = len(self.items)
        if not n:
            return self.title
        return f"{n} {self.one if n == 1 and self.one else self.title}"

    def message(self) -> str:
        """One line: count, title, the first few files, what to do."""
        if len(self.items) == 1 and self.solo:
            return self.solo
        if not self.items:
            return f"{self.title}; {self.todo}"
        return f"{self.heading()}: {listing(self.items)}; {self.todo}"

    def to_dict(self) -> dict:
        return {
            "severity": self.severity,
            "title": self.title,
            "heading": self.heading(),
            "count": len(self.items),
            "files": list(self.items),
            "todo": self.todo,
            "samples": list(self.stems),
            "skippable": self.skippable,
        }


@dataclass(frozen=True)
class DecodeSpec:
    """How every mask of a data set is decoded, and the limits for reading its files.

    ``encoding`` is ``auto`` before the data set has been scanned; after that it is one of
    index, 16bit, binary, rgb, rendered, with ``snap`` set for lossy masks (see
    :mod:`pixelwise.data.encodings`).
    """

    encoding: str = "auto"
    snap: bool = False
    num_classes: int | None = None  # None: any stored value is taken as a class (classes inferred)
    ignore_index: int = 255
    colors: tuple[tuple[int, int, int], ...] = ()  # class colours, for colour-coded masks
    ignore_colors: tuple[tuple[int, int, int], ...] = ()  # colours that mean "ignore"
    lut: tuple[int, ...] = ()  # stored value -> class / ignore index / INVALID; () = values are classes
    lut_name: str = ""
    resize_masks: str | None = None  # None: a size mismatch is an error; "nearest": resize the mask
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Classes that are countable objects: ids drawn from shapes or Cityscapes ids are kept on them only.
    things: tuple[int, ...] | None = None  # None: not resolved yet (every object kept)

    def describe(self) -> str:
        """One line for the user: what the stored pixels are taken to mean."""
        if self.encoding == "rendered":
            text = "rendered from polygons/RLE (already class indices)"
        elif self.encoding == "binary":
            text = "binary 0/255 (255 read as class 1)"
        elif self.encoding == "rgb":
            text = f"rgb colour-coded ({len(self.colors)} class colours"
            text += f", {len(self.ignore_colors)} ignore colours)" if self.ignore_colors else ")"
        elif self.encoding == "16bit":
            text = "16-bit index PNG (each value is a class index)"
        else:
            text = "index (each stored value is a class index)"
        if self.lut_name:
            text += f" through the {self.lut_name} table"
        if self.snap:
            if self.encoding == "rgb":
                target = "colour"
            elif self.encoding == "binary":
                target = "value (threshold 128)"
            else:
                target = "value"
            text = f"jpeg-snap: lossy masks snapped to the nearest valid {target}; underlying encoding {text}"
        return text


@dataclass(frozen=True)
class Shape:
    """One annotated region.

    ``kind``: coco-polygon and rle (rasterised by pycocotools, COCO's rules), polygon, rectangle,
    circle and bitmap (drawn by Pillow, LabelMe's rules).
    """

    label: int
    kind: str
    data: object  # polygons: tuple of flat (x0, y0, x1, y1, ...) tuples; rle: dict; rectangle/circle: 2 points;
    # bitmap: base64 PNG
    origin: tuple[int, int] = (0, 0)  # bitmap: top-left corner
    instance: int = 0  # object id (> 0) the shape belongs to; 0 = no object (stuff, crowd, ignore)


@dataclass(frozen=True)
class VectorMask:
    """Shapes to paint, in order, on an (height, width) canvas of class 0 (see :mod:`pixelwise.data.render`)."""

    height: int
    width: int
    shapes: tuple[Shape, ...]
    source: str  # file the shapes come from, for error messages


@dataclass(frozen=True)
class Sample:
    """One image and its mask, paired by file stem.

    ``spec`` says how the mask is decoded (set once the data set has been scanned; None = index
    values as stored). ``vector`` holds the shapes of a mask drawn from annotations (COCO,
    LabelMe); then ``mask`` is the annotation file, named in messages. ``instances`` is the file
    that holds the sample's object ids (folder: instances/<stem>.png; Cityscapes: the
    ``_gtFine_instanceIds.png``; COCO and LabelMe: the annotation file, ids from the shapes);
    None = no object ids.
    """

    stem: str
    image: Path
    mask: Path
    spec: DecodeSpec | None = field(default=None, compare=False)
    vector: VectorMask | None = field(default=None, compare=False, repr=False)
    instances: Path | None = field(default=None, compare=False)


@dataclass
class DataReport:
    """What validation learnt about a split: class pixel counts and image sizes."""

    class_pixels: np.ndarray  # (C,) int64 pixels per class, ignore index excluded
    ignored_pixels: int
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # stem -> (H, W)
    values: dict[str, dict[int, int]] = field(default_factory=dict)  # stem -> {mask value: pixels}

    def subset(self, stems, num_classes: int, ignore_index: int) -> DataReport:
        """The report restricted to some samples (e.g. the training split), without re-reading files."""
        counts = np.zeros(num_classes, dtype=np.int64)
        ignored = 0
        for s in stems:
            for v, c in self.values[s].items():
                if v == ignore_index:
                    ignored += c
                else:
                    counts[v] += c
        return DataReport(counts, ignored, {s: self.sizes[s] for s in stems}, {s: self.values[s] for s in stems})


@dataclass
class DataSource:
    """What a format reader found on disk, before any file is decoded."""

    format: str
    root: Path
    samples: list[Sample]
    classes: ClassInfo | None = None  # None: inferred from the masks
    classes_from: str = ""  # where the classes come from, for the report
    colors: list[tuple[int, int, int]] = field(default_factory=list)  # colours masks may be coded in
    ignore_colors: list[tuple[int, int, int]] = field(default_factory=list)
    spec: DecodeSpec = field(default_factory=DecodeSpec)  # parts the format fixes (lookup table, encoding)
    splits: dict[str, list[Sample]] | None = None  # None: splits/*.txt or a seeded split
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    things_given: bool = False  # classes.things comes from a classes file's ``things:``
    default_things: tuple[str, ...] | None = None  # the format's thing classes by name; None: none known
    things_from: str = ""  # where default_things come from, for the notes

    def use_classes_file(self, path: str | Path) -> None:
        """Take the classes (and, when the file gives them, the mask colours) from a classes YAML file."""
        cf = read_classes_file(path)
        self.classes, self.classes_from = cf.info, str(path)
        self.things_given = cf.things_given
        if cf.colors_given:
            self.colors = list(cf.info.colors)
        if cf.ignore_colors:
            self.ignore_colors = list(cf.ignore_colors)


@dataclass
class FolderDataset:
    """A validated data set on disk: its classes and its splits (samples carry their decode spec)."""

    root: Path
    classes: ClassInfo
    splits: dict[str, list[Sample]]
    report: DataReport  # over the training split
    format: str = "folder"
    spec: DecodeSpec = field(default_factory=DecodeSpec)
    notes: list[str] = field(default_factory=list)  # what was detected and decided, for the user
    skipped: list[str] = field(default_factory=list)  # "path (reason)" of samples left out by --skip-bad
    warnings: list[Problem] = field(default_factory=list)

    @property
    def has_instances(self) -> bool:
        """Whether every sample of every split has object ids (see :attr:`Sample.instances`)."""
        samples = [s for ss in self.splits.values() for s in ss]
        return bool(samples) and all(s.instances is not None for s in samples)
