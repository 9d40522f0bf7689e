"""The pixelwise folder layout.

Layout::

    DATA/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp>
    DATA/masks/<stem>.png            class indices (L, P, I;16), 0/255 binary, RGB class colours or
                                     JPEG: see pixelwise.data.encodings
    DATA/instances/<stem>.png        optional: object ids, 8-bit or 16-bit (0 = no object); an
                                     object's class is the class of its pixels in masks/<stem>.png
    DATA/classes.yaml                optional: names, colors, ignore_index (default 255), ignore_color,
                                     things (the classes that are countable objects)
    DATA/splits/{train,val,test}.txt optional: one stem per line (see pixelwise.data.splits)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...classes import ClassInfo, read_classes_file
from ...errors import PixelwiseError
from ..pairing import files_by_stem, pair_by_stem
from ..problems import raise_first
from ..types import IMAGE_EXTENSIONS, MASK_EXTENSIONS, DataSource, Problem, Sample


def list_folder(root: str | Path) -> tuple[list[Sample], list[Problem]]:
    """Pair DATA/images/* with DATA/masks/<stem>.*; returns (samples, problems).

    Problems concern single files (unpaired, ambiguous, not an image) and are left to the caller
    to raise or skip; a missing folder or an empty images/ folder raises at once.
    """
    root = Path(root)
    if not root.is_dir():
        raise PixelwiseError(f"{root}: data folder not found; give a folder with images/ and masks/")
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise PixelwiseError(
                f"{d}: folder not found; a data set needs {root}/images/<name>.png and {root}/masks/<name>.png"
            )
    foreign: list[str] = []
    images = files_by_stem(images_dir, IMAGE_EXTENSIONS, foreign)
    masks = files_by_stem(masks_dir, MASK_EXTENSIONS, foreign)
    if not images:
        nested = sorted(d.name for d in images_dir.iterdir() if d.is_dir() and files_by_stem(d, IMAGE_EXTENSIONS))
        if nested:
            raise PixelwiseError(
                f"{images_dir}: the images are in sub-folders ({', '.join(nested)}), not in images/ itself; move "
                f"them up into images/ (and the masks into masks/) and list split names in {root}/splits/<split>.txt"
            )
        raise PixelwiseError(
            f"{images_dir}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}); add images or fix the path"
        )
    problems: list[Problem] = []
    if foreign:
        problems.append(
            Problem(
                "files are not images by their extension and were left out",
                "move them out of images/ and masks/",
                foreign,
                severity="warning",
                one="file is not an image by its extension and was left out",
            )
        )
    samples, unpaired = pair_by_stem(images, masks, f"{masks_dir}/<stem>.png for each")
    return samples, problems + unpaired


def find_samples(root: str | Path) -> list[Sample]:
    """Pair DATA/images/* with DATA/masks/<stem>.*; every unpaired or ambiguous file is an error."""
    samples, problems = list_folder(root)
    raise_first(problems)
    return samples


def load_classes(root: str | Path) -> ClassInfo | None:
    """Read DATA/classes.yaml (see :func:`pixelwise.classes.read_classes_file`), or None when the data set has none."""
    path = Path(root) / "classes.yaml"
    if not path.exists():
        return None
    return read_classes_file(path).info


def read_folder(root: Path) -> DataSource:
    """The pixelwise layout: images/, masks/, optional classes.yaml and splits/."""
    samples, problems = list_folder(root)
    instances = files_by_stem(root / "instances", (".png", ".tif", ".tiff"))
    if instances:
        # A second file of one stem is taken as absent: validation names the sample.
        samples = [
            replace(s, instances=instances[s.stem][0]) if len(instances.get(s.stem, [])) == 1 else s for s in samples
        ]
    src = DataSource("folder", root, samples, problems=problems)
    if (root / "classes.yaml").exists():
        src.use_classes_file(root / "classes.yaml")
    return src
