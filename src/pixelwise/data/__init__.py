"""Reading data sets: every format pixelwise understands, read into the same samples and classes.

The public surface, for training, evaluation, prediction and users of the Python API::

    from pixelwise.data import open_dataset, read_sample
    ds = open_dataset("VOCdevkit", format="voc")     # read, split and check every file
    image, mask = read_sample(ds.splits["train"][0])  # (H, W, 3) uint8, (H, W) int64

Inside, data flows one way: ``types`` (the shared records and names) <- ``encodings``,
``render``, ``decode`` (one file) <- ``pairing``, ``splits``, ``formats`` (a data set as
shipped) <- ``validation`` (every file checked once) <- ``open`` (all of it, for a caller).
The torch parts (``dataset``, ``transforms``) and the demo data (``synthetic``) are imported
from their own modules.

Names are loaded on first use, as in :mod:`pixelwise`, so that ``from pixelwise.data import
DEFAULT_MAX_PIXELS`` (the command-line parser) does not load every reader.
"""

from __future__ import annotations

import importlib

# Public name -> the module of this package that defines it.
_HOME = {
    "DEFAULT_MAX_PIXELS": "types",
    "IMAGE_EXTENSIONS": "types",
    "MASK_EXTENSIONS": "types",
    "SPLIT_NAMES": "types",
    "DataReport": "types",
    "DataSource": "types",
    "DecodeSpec": "types",
    "FolderDataset": "types",
    "Problem": "types",
    "Sample": "types",
    "ENCODINGS": "encodings",
    "image_to_rgb": "decode",
    "read_image": "decode",
    "read_mask": "decode",
    "read_sample": "decode",
    "read_sample_mask": "decode",
    "read_instances": "decode",
    "resize_nearest": "decode",
    "FORMATS": "formats",
    "detect_format": "formats",
    "find_samples": "formats.folder",
    "load_classes": "formats.folder",
    "seeded_split": "splits",
    "split_samples": "splits",
    "CheckResult": "validation",
    "check_samples": "validation",
    "validate_samples": "validation",
    "ScannedData": "open",
    "load_source": "open",
    "open_dataset": "open",
    "open_folder": "open",
    "scan_dataset": "open",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
