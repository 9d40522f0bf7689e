"""Open a data set of any format: read it, split it, check every file; what train, evaluate and
inspect call.

:func:`scan_dataset` reads and checks without stopping at problems in files or split lists
(``pixelwise inspect`` lists them all); :func:`open_dataset` stops with all of them at once, or
with ``skip_bad`` leaves the samples concerned out, and returns a :class:`~pixelwise.data.types.FolderDataset`
whose samples carry the decode spec validation resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..classes import ClassInfo
from ..errors import PixelwiseError
from .coverage import spread_warnings, training_problems
from .encodings import ENCODINGS
from .formats import FORMATS, detect_format
from .problems import errors, raise_all
from .splits import read_split_files, seeded_split, shipped_splits
from .types import DEFAULT_MAX_PIXELS, SPLIT_NAMES, DataSource, DecodeSpec, FolderDataset, Problem, Sample
from .validation import CheckResult, ThingsRule, check_samples


@dataclass
class ScannedData:
    """A data set read once: its source, splits, the checks of every sample, problems and notes."""

    source: DataSource
    splits: dict[str, list[Sample]]
    result: CheckResult
    problems: list[Problem]
    notes: list[str]


def load_source(root: str | Path, format: str = "auto") -> tuple[DataSource, str]:
    """Run the reader of ``format`` (detected when "auto"); returns the source and a line saying which."""
    root = Path(root)
    if format in (None, "", "auto"):
        format, why = detect_format(root)
        line = f"format: {format} (detected: {why})"
    elif format not in FORMATS:
        raise PixelwiseError(f"unknown format '{format}'; use one of {', '.join(FORMATS)} or auto")
    else:
        if not root.is_dir():
            raise PixelwiseError(f"{root}: data folder not found")
        line = f"format: {format} (given)"
    return FORMATS[format](root), line


def _check_options(encoding: str, resize_masks: str | None, max_pixels: int) -> None:
    if encoding not in ENCODINGS:
        raise PixelwiseError(f"unknown encoding '{encoding}'; use one of {', '.join(ENCODINGS)}")
    if resize_masks not in (None, "", "nearest"):
        raise PixelwiseError(
            f"--resize-masks {resize_masks}: only 'nearest' is offered (a class index is never interpolated)"
        )
    if max_pixels < 1:
        raise PixelwiseError("--max-image-pixels must be at least 1")


def _classes_to_use(src: DataSource, classes: ClassInfo | None, root: str | Path) -> ClassInfo | None:
    """The classes given by the caller (a model's, which must match the data set's), else the data set's."""
    if classes is None:
        return src.classes
    if src.classes is not None and src.classes.names != classes.names:
        raise PixelwiseError(
            f"{src.classes_from or root} lists {src.classes.names}, the model was trained on {classes.names}; "
            "evaluate on data with the model's classes"
        )
    return classes


def _decode_spec(
    src: DataSource, classes: ClassInfo | None, encoding: str, resize_masks: str | None, max_pixels: int
) -> DecodeSpec:
    """What the format fixes, the colours it knows, the options given; ``encoding`` overrides the format's."""
    spec = replace(
        src.spec,
        colors=tuple(tuple(c) for c in src.colors),
        ignore_colors=tuple(tuple(c) for c in src.ignore_colors),
        resize_masks=resize_masks or None,
        max_pixels=max_pixels,
        ignore_index=classes.ignore_index if classes else 255,
    )
    if encoding == "auto":
        return spec
    # A format's lookup table translates stored index values; it means nothing for colours or 0/255.
    keep_lut = encoding not in ("rgb", "binary")
    return replace(
        spec, encoding=encoding, lut=spec.lut if keep_lut else (), lut_name=spec.lut_name if keep_lut else ""
    )


def _things_rule(src: DataSource, classes: ClassInfo | None) -> ThingsRule:
    """The thing classes: a model's (when it names any), a classes file's things:, the format's, or the data's."""
    if classes is not None and classes.things:
        return ThingsRule(given=tuple(classes.things), source="the model's classes")
    if src.things_given and src.classes is not None:
        return ThingsRule(given=tuple(src.classes.things), source=src.classes_from)
    return ThingsRule(default_names=src.default_things, source=src.things_from)


@dataclass
class _Splits:
    """The splits of a data set, what their lists got wrong, notes, and the split files (None: none)."""

    splits: dict[str, list[Sample]]
    problems: list[Problem]
    notes: list[str]
    files: dict[str, Path] | None = None


def _split(root: str | Path, src: DataSource, val_fraction: float, test_fraction: float, seed: int) -> _Splits:
    """The splits the format ships (a validation split held out when it ships none), split files, or a seeded split."""
    if src.splits is not None:
        splits, notes = shipped_splits(root, src.splits, val_fraction, seed)
        return _Splits(splits, [], notes)
    if not src.samples:
        return _Splits({n: [] for n in SPLIT_NAMES}, [], [])
    lists = read_split_files(src.root, src.samples)
    if lists is None:
        return _Splits(seeded_split(src.root, src.samples, val_fraction, test_fraction, seed), [], [])
    return _Splits(lists.splits, lists.problems, lists.notes(), lists.files)


def _samples_of(splits: dict[str, list[Sample]], names: tuple[str, ...]) -> list[Sample]:
    """The samples of the named splits, each once, in split order."""
    seen: set[str] = set()
    out = []
    for n in names:
        for s in splits.get(n, []):
            if s.stem not in seen:
                seen.add(s.stem)
                out.append(s)
    return out


def scan_dataset(
    root: str | Path,
    format: str = "auto",
    encoding: str = "auto",
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: ClassInfo | None = None,
    classes_file: str | Path | None = None,
    validate_splits: tuple[str, ...] = SPLIT_NAMES,
    resize_masks: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = False,
    for_training: bool | None = None,
    objects: bool = True,
) -> ScannedData:
    """Read a data set of any format and check every sample of ``validate_splits``.

    Raises only when the data set as a whole cannot be understood (no folder, unknown format,
    bad classes file); problems in files and split lists are returned. ``max_pixels``: largest
    image or mask decoded; ``workers``: reader threads (default from the CPU count).
    ``for_training``: also check what training needs (a train split whose masks show more than
    one class); None = when the data set's own classes are used and train is checked.
    ``objects`` False: object ids are not read (a semantic run does not use them, so a damaged
    instances/ folder does not stop it); a note says how many samples had them.
    """
    _check_options(encoding, resize_masks, max_pixels)
    src, line = load_source(root, format)
    notes = [line]
    if classes_file:
        src.use_classes_file(Path(classes_file))
    if src.classes_from:
        notes.append(
            f"classes: {src.classes.num_classes} from {src.classes_from}, ignore index {src.classes.ignore_index}"
        )
    effective = _classes_to_use(src, classes, root)
    spec = _decode_spec(src, effective, encoding, resize_masks, max_pixels)
    sp = _split(root, src, val_fraction, test_fraction, seed)
    if not objects:
        notes += _drop_object_ids(sp)
    to_check = _samples_of(sp.splits, validate_splits)
    rule = _things_rule(src, classes)
    result = check_samples(to_check, effective, spec, workers=workers, progress=progress, things=rule)
    problems = sp.problems + src.problems + result.problems
    training = for_training if for_training is not None else (classes is None and "train" in validate_splits)
    if training and (to_check or not errors(problems)):  # no sample at all: the problems above say why
        problems += training_problems(root, sp.splits, sp.files, result.report.values, result.classes)
    problems += spread_warnings(sp.splits, validate_splits, result.report.values, result.classes)
    return ScannedData(src, sp.splits, result, problems, notes + sp.notes + src.notes + result.notes)


def _drop_object_ids(sp: _Splits) -> list[str]:
    """Forget the object ids of every sample of ``sp`` (in place); a note when some had them."""
    had = sum(s.instances is not None for ss in sp.splits.values() for s in ss)
    if not had:
        return []
    sp.splits = {n: [replace(s, instances=None) for s in ss] for n, ss in sp.splits.items()}
    return [f"object ids: {had} samples have them; not read, since this run uses the classes only"]


def _leave_out_bad(
    root: str | Path, scanned: ScannedData, skip_bad: bool, format: str
) -> tuple[dict[str, list[Sample]], list[str]]:
    """Raise every error at once, or with ``skip_bad`` drop the samples with errors; returns the splits
    and the "path (reason)" of what was left out. Problems of the data set as a whole always raise."""
    errs = errors(scanned.problems)
    if not errs:
        return scanned.splits, []
    fatal = [p for p in errs if not p.skippable]
    if not skip_bad or fatal:
        raise_all(fatal if skip_bad else errs, root, format, skip_bad_helps=not skip_bad)
    drop = set(scanned.result.bad)
    skipped: list[str] = []
    for p in errs:
        drop |= set(p.stems)
        skipped += p.items
    return {n: [s for s in ss if s.stem not in drop] for n, ss in scanned.splits.items()}, skipped


def _require_samples(
    root: str | Path, splits: dict[str, list[Sample]], validate_splits: tuple[str, ...], skipped: list[str]
) -> None:
    after = " after --skip-bad" if skipped else ""
    if not any(splits.get(n) for n in validate_splits):
        raise PixelwiseError(
            f"{root}: the {'/'.join(validate_splits)} split is empty{after}; "
            f"choose another split or list names in {root}/splits/<split>.txt"
        )
    if "train" in validate_splits and not splits["train"]:
        raise PixelwiseError(f"{root}: the train split is empty{after}; add training samples")


def open_dataset(
    root: str | Path,
    format: str = "auto",
    encoding: str = "auto",
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: ClassInfo | None = None,
    classes_file: str | Path | None = None,
    validate_splits: tuple[str, ...] = SPLIT_NAMES,
    resize_masks: str | None = None,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = False,
    for_training: bool | None = None,
    objects: bool = True,
) -> FolderDataset:
    """Read, split and validate a data set of any format for training or evaluation.

    Every error stops it, all listed at once with the files they concern (one line when there is
    one), unless ``skip_bad``: then the samples with problems are left out and listed in
    ``FolderDataset.skipped`` (problems of the data set as a whole still stop it). The other
    options are those of :func:`scan_dataset`. The returned samples carry the resolved decode
    spec, so :func:`pixelwise.data.read_sample` decodes them as validation did.
    """
    scanned = scan_dataset(
        root,
        format,
        encoding,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        classes=classes,
        classes_file=classes_file,
        validate_splits=validate_splits,
        resize_masks=resize_masks,
        max_pixels=max_pixels,
        workers=workers,
        progress=progress,
        for_training=for_training,
        objects=objects,
    )
    splits, skipped = _leave_out_bad(root, scanned, skip_bad, format)
    _require_samples(root, splits, validate_splits, skipped)
    result = scanned.result
    splits = {n: [replace(s, spec=result.spec) for s in ss] for n, ss in splits.items()}
    train_stems = [s.stem for s in splits["train"] if s.stem in result.report.values]
    return FolderDataset(
        root=Path(root),
        classes=result.classes,
        splits=splits,
        report=result.report.subset(train_stems, result.classes.num_classes, result.classes.ignore_index),
        format=scanned.source.format,
        spec=result.spec,
        notes=scanned.notes,
        skipped=skipped,
        warnings=[p for p in scanned.problems if p.severity == "warning"],
    )


def open_folder(
    root: str | Path,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: ClassInfo | None = None,
    validate_splits: tuple[str, ...] = SPLIT_NAMES,
) -> FolderDataset:
    """Find, split and validate a data set in the pixelwise folder layout.

    ``classes`` overrides DATA/classes.yaml (used by evaluate, where the model's classes rule).
    Without either, classes are inferred from the masks of all splits. See :func:`open_dataset`
    for the other formats and options.
    """
    return open_dataset(
        root,
        "folder",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        classes=classes,
        validate_splits=validate_splits,
    )
