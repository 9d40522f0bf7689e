"""Readers and parsers fed arbitrary names and contents: a correct result or a clear PixelwiseError.

A user's data set can hold any file name, any split list, any mask value and any annotation;
none of them may end in a traceback.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.classes import read_classes_file
from pixelwise.data import DecodeSpec, Sample, check_samples, find_samples, read_mask, split_samples
from pixelwise.data.encodings import INVALID, map_values
from pixelwise.data.formats.coco import read_coco
from pixelwise.data.formats.labelme import read_labelme
from pixelwise.data.pairing import pair_by_stem
from pixelwise.data.splits import read_split_files, read_split_list
from pixelwise.errors import PixelwiseError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Few distinct stems, so that duplicates, unpaired images and orphan masks all occur often.
stems = st.sampled_from(["a", "b", "c", "d", "e", "ä ö", "x.y"])
image_exts = st.sampled_from([".png", ".jpg", ".JPG", ".tif"])
mask_exts = st.sampled_from([".png", ".gif"])


def _table(names: list[tuple[str, str]], folder: str) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for stem, ext in dict.fromkeys(names):  # a file name occurs once in a folder
        out.setdefault(stem, []).append(Path(folder) / f"{stem}{ext}")
    return out


@FAST
@given(st.lists(st.tuples(stems, image_exts), max_size=12), st.lists(st.tuples(stems, mask_exts), max_size=12))
def test_pairing_keeps_exactly_the_unambiguous_pairs_and_reports_every_other_file(images, masks):
    image_table, mask_table = _table(images, "images"), _table(masks, "masks")
    samples, problems = pair_by_stem(image_table, mask_table, "masks/<stem>.png")

    expected = sorted(s for s in image_table if len(image_table[s]) == 1 and len(mask_table.get(s, [])) == 1)
    assert [s.stem for s in samples] == expected
    for s in samples:
        assert s.image == image_table[s.stem][0] and s.mask == mask_table[s.stem][0]
    # Every image left out is named by a problem that says it cannot be used.
    unusable = {stem for p in problems for stem in p.stems}
    assert set(image_table) - set(expected) == unusable
    # Every mask without an image is listed too.
    listed = " ".join(item for p in problems for item in p.items)
    for stem in set(mask_table) - set(image_table):
        assert str(mask_table[stem][0]) in listed
    assert all(p.message() for p in problems)


file_names = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/\\\x00"), min_size=1, max_size=12
).filter(lambda n: n not in (".", ".."))


@FAST
@given(st.lists(file_names, max_size=6, unique=True), st.lists(file_names, max_size=6, unique=True))
def test_a_folder_of_arbitrary_file_names_pairs_by_stem_or_says_why_not(image_names, mask_names):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub, names in (("images", image_names), ("masks", mask_names)):
            (root / sub).mkdir()
            for n in names:
                try:
                    (root / sub / n).write_bytes(b"")
                except OSError:  # a name the file system refuses is not a case to test
                    pass
        try:
            samples = find_samples(root)
        except PixelwiseError as e:
            assert str(e)
            return
        for s in samples:
            assert s.image.parent.name == "images" and s.mask.parent.name == "masks"
            assert s.image.stem == s.mask.stem == s.stem


split_lines = st.lists(
    st.one_of(stems, st.just("# a comment"), st.just(""), st.just("  b.png "), st.text(max_size=8)), max_size=8
)


@FAST
@given(split_lines, split_lines, st.booleans())
def test_split_files_of_any_content_give_disjoint_known_splits_or_a_clear_error(train, val, skip_missing):
    known = ["a", "b", "c", "d", "e"]
    samples = [Sample(s, Path(f"images/{s}.png"), Path(f"masks/{s}.png")) for s in known]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_text("\n".join(train), encoding="utf-8")
        (root / "splits" / "val.txt").write_text("\n".join(val), encoding="utf-8")
        try:
            splits = split_samples(root, samples, skip_missing=skip_missing)
        except PixelwiseError as e:
            assert str(e)
            return
    chosen = [s.stem for n in ("train", "val", "test") for s in splits[n]]
    assert splits["train"]
    assert set(chosen) <= set(known)
    assert len(set(chosen)) == len(chosen)  # a sample belongs to one split


@FAST
@given(split_lines, split_lines, split_lines, st.sets(st.sampled_from(["train", "val", "test"]), min_size=1))
def test_split_lists_of_any_content_are_read_whole_with_every_fault_reported(train, val, test, present):
    """inspect's reading of split lists: never an exception, disjoint splits, every listed name that has no
    sample named by a problem, every pair that no list names counted as unlisted."""
    known = ["a", "b", "c", "d", "e"]
    samples = [Sample(s, Path(f"images/{s}.png"), Path(f"masks/{s}.png")) for s in known]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "splits").mkdir()
        for name, lines in (("train", train), ("val", val), ("test", test)):
            if name in present:
                (root / "splits" / f"{name}.txt").write_text("\n".join(lines), encoding="utf-8")
        lists = read_split_files(root, samples)
        listed = {n: read_split_list(root / "splits" / f"{n}.txt") for n in present}
    chosen = [s.stem for n in ("train", "val", "test") for s in lists.splits[n]]
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(known)
    assert set(lists.files) == present and all(not lists.splits[n] for n in {"train", "val", "test"} - present)
    missing = {s for stems in listed.values() for s in stems if s not in known}
    named = {item for p in lists.problems if "no image/mask pair" in p.title for item in p.items}
    assert named == missing
    assert set(lists.unlisted) == set(known) - {s for stems in listed.values() for s in stems}
    for p in lists.problems:
        assert p.message() and "\n" not in p.message()


@FAST
@given(st.binary(max_size=40))
def test_a_split_file_that_is_not_text_is_a_clear_error(content):
    samples = [Sample("a", Path("images/a.png"), Path("masks/a.png"))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_bytes(content)
        try:
            splits = split_samples(root, samples)
        except PixelwiseError as e:
            assert "train.txt" in str(e)
            return
        assert [s.stem for s in splits["train"]] == ["a"]


yaml_scalars = st.one_of(
    st.integers(-3, 300), st.booleans(), st.none(), st.text(max_size=6), st.floats(allow_nan=False, width=16)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=12,
)


names_lists = st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=4)
colours = st.lists(st.integers(-1, 256), min_size=3, max_size=3)
classes_docs = st.fixed_dictionaries(
    {"names": st.one_of(names_lists, yaml_values)},
    optional={
        "colors": st.one_of(st.lists(colours, max_size=4), yaml_values),
        "ignore_index": st.one_of(st.integers(-1, 70000), yaml_values),
        "ignore_color": st.one_of(colours, st.lists(colours, max_size=2), yaml_values),
    },
)


def _read_classes_text(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classes.yaml"
        path.write_text(text)
        try:
            return read_classes_file(path)
        except PixelwiseError as e:
            assert str(path) in str(e)
            return None


# The examples once raised TypeError (`ignore_color: 5`) and KeyError (`ignore_color: {x: 1}`)
# where a PixelwiseError naming the file is due.
@settings(max_examples=150, deadline=None, derandomize=True, report_multiple_bugs=False)
@given(classes_docs)
@example({"names": ["a", "b"], "ignore_color": 5})
@example({"names": ["a", "b"], "ignore_color": {"x": 1}})
def test_classes_files_of_any_structure_give_consistent_classes_or_a_clear_error(doc):
    cf = _read_classes_text(json.dumps(doc))  # JSON is YAML
    if cf is None:
        return
    info = cf.info
    assert info.names and len(set(info.names)) == len(info.names)
    assert len(info.colors) == len(info.names)
    assert not 0 <= info.ignore_index < len(info.names)


def test_a_classes_file_with_an_impossible_date_is_a_clear_error():
    # YAML turns 2001-13-45 into a date and fails with ValueError.
    assert _read_classes_text("names: [a]\nignore_index: 2001-13-45\n") is None


@given(
    st.lists(st.integers(-5, 70000), min_size=1, max_size=20),
    st.integers(1, 12),
    st.sampled_from([255, 0, 65535]),
    st.sampled_from(["index", "16bit", "binary"]),
    st.booleans(),
)
def test_every_stored_value_maps_to_a_class_the_ignore_index_or_invalid(keys, num_classes, ignore, encoding, snap):
    ignore = ignore if ignore >= num_classes else 255
    spec = DecodeSpec(encoding=encoding, snap=snap, num_classes=num_classes, ignore_index=ignore)
    mapped = map_values(np.array(keys), "gray", spec)
    assert mapped.shape == (len(keys),)
    allowed = set(range(num_classes)) | {ignore, INVALID} if encoding != "binary" else {0, 1, INVALID}
    assert set(mapped.tolist()) <= allowed
    if encoding != "binary" and not snap:
        for k, m in zip(keys, mapped.tolist()):
            valid = 0 <= k < num_classes or k == ignore
            assert m == (k if valid else INVALID)


@FAST
@given(st.lists(st.integers(0, 255), min_size=1, max_size=30), st.integers(1, 8))
def test_an_index_mask_reads_as_stored_or_names_the_file_and_a_wrong_value(values, num_classes):
    arr = np.array(values, np.uint8).reshape(1, -1)
    spec = DecodeSpec(encoding="index", num_classes=num_classes, ignore_index=255)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.png"
        Image.fromarray(arr, "L").save(path)
        valid = all(v < num_classes or v == 255 for v in values)
        if valid:
            assert read_mask(path, spec).tolist() == arr.astype(np.int64).tolist()
        else:
            with pytest.raises(PixelwiseError, match=r"m\.png: value \d+ at pixel x=\d+, y=0 is no class"):
                read_mask(path, spec)


coords = st.one_of(st.integers(-3, 30), st.floats(-3, 30, allow_nan=False), st.text(max_size=2), st.none())
points = st.lists(st.one_of(st.lists(coords, max_size=3), coords), max_size=5)
shapes = st.one_of(
    st.fixed_dictionaries(
        {
            "label": st.sampled_from(["kite", "person", "__ignore__", "_background_", "unknown"]),
            "shape_type": st.sampled_from(["polygon", "rectangle", "circle", "mask", "line", "point", None, "blob"]),
            "points": points,
        },
        optional={"mask": st.sampled_from(["", "not base64!", "iVBORw0KGgo="])},
    ),
    yaml_scalars,
)
labelme_docs = st.one_of(
    st.fixed_dictionaries(
        {
            "shapes": st.one_of(st.lists(shapes, max_size=4), yaml_scalars),
            "imagePath": st.one_of(st.just("img.png"), st.just("..\\img.png"), st.text(max_size=5), st.none()),
            "imageHeight": st.one_of(st.integers(-2, 40), st.just(10**6), st.text(max_size=3)),
            "imageWidth": st.one_of(st.integers(-2, 40), st.just(10**6), st.none()),
        }
    ),
    st.just(["shapes", "imagePath"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(labelme_docs, min_size=1, max_size=3))
def test_labelme_files_of_any_content_are_read_and_checked_without_a_traceback(docs):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "img.png")
        for i, d in enumerate(docs):
            (root / f"f{i}.json").write_text(json.dumps(d))
        try:
            src = read_labelme(root)
        except PixelwiseError as e:
            assert str(e)
            return
        result = check_samples(src.samples, src.classes, DecodeSpec(max_pixels=10_000))
        usable = set(result.report.values)
        for c in result.checks:
            # A sample is usable, or something names its file and says why it is not.
            assert (
                c.sample.stem in usable
                or c.sample.stem in result.bad
                or any(c.sample.stem in p.stems for p in src.problems + result.problems)
            )


numbers = st.one_of(st.integers(-2, 30), st.floats(-2, 30, allow_nan=False))
coco_annotations = st.one_of(
    st.fixed_dictionaries(
        {
            "image_id": st.one_of(st.sampled_from([1, 2, 3]), yaml_values),
            "category_id": st.one_of(st.sampled_from([1, 2, 7]), yaml_values),
        },
        optional={
            "id": st.one_of(st.integers(0, 5), st.text(max_size=2)),
            "iscrowd": st.sampled_from([0, 1]),
            "area": st.one_of(numbers, st.text(max_size=3), st.none()),
            "segmentation": st.one_of(
                st.lists(st.lists(numbers, max_size=8), max_size=2),
                st.lists(yaml_values, max_size=2),
                st.fixed_dictionaries({"size": st.just([4, 5]), "counts": st.one_of(st.text(max_size=4), numbers)}),
                yaml_scalars,
            ),
        },
    ),
    yaml_scalars,
)
good_image = st.fixed_dictionaries(
    {
        "id": st.sampled_from([1, 2, 3]),
        "file_name": st.sampled_from(["a.png", "b.png", "sub/c.png"]),
        "height": st.one_of(st.integers(-1, 6), st.just(10**6)),
        "width": st.integers(-1, 6),
    }
)
good_images = st.lists(good_image, max_size=3)
coco_images = st.one_of(
    good_images, good_images, st.lists(st.one_of(good_image, st.fixed_dictionaries({"id": yaml_values}), yaml_scalars))
)
good_categories = st.just([{"id": 1, "name": "kite"}, {"id": 2, "name": "person"}])
coco_docs = st.fixed_dictionaries(
    {
        "images": coco_images,
        "annotations": st.lists(coco_annotations, max_size=6),
        "categories": st.one_of(
            good_categories,
            good_categories,
            good_categories,
            st.lists(st.one_of(st.fixed_dictionaries({"id": yaml_values, "name": yaml_values}), yaml_scalars)),
        ),
    }
)
_cats = [{"id": 1, "name": "kite"}]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coco_docs)
@example({"images": 3, "annotations": [], "categories": _cats})
@example({"images": [], "annotations": {"a": 1}, "categories": _cats})
@example({"images": [{"id": [1]}], "annotations": [], "categories": _cats})
@example({"images": [], "annotations": [], "categories": [{"id": "x", "name": "kite"}]})
def test_coco_files_of_any_content_are_read_and_checked_without_a_traceback(doc):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(root / "images" / "a.png")
        (root / "instances_train.json").write_text(json.dumps(doc))
        try:
            src = read_coco(root)
        except PixelwiseError as e:
            event("the reader refused the file")
            assert "instances_train.json" in str(e)
            return
        event(f"read: {len(src.samples)} samples, {len(src.problems)} problems")
        result = check_samples(src.samples, src.classes, DecodeSpec(max_pixels=10_000))
        usable = set(result.report.values)
        for c in result.checks:
            assert (
                c.sample.stem in usable
                or c.sample.stem in result.bad
                or any(c.sample.stem in p.stems for p in src.problems + result.problems)
            )
