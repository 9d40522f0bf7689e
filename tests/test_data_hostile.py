"""Hostile but fair data: split lists naming files that are not there, masks of one class, folders
made for evaluation only, data with many problems at once, and palette masks as pixelwise writes them.

Each case ends in a result that is right or one clear message (a summary line first when there are
several problems), never a model trained to a meaningless score.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import make_simple_dataset, write_pair
from pixelwise.classes import ClassInfo, default_palette
from pixelwise.cli import main
from pixelwise.data import open_dataset, read_mask, read_sample
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import write_mask_png
from pixelwise.inspection import format_report, inspect_data


def _split_files(root, **lists) -> None:
    (root / "splits").mkdir(exist_ok=True)
    for name, stems in lists.items():
        (root / "splits" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))


def _write_one_class(root, n=5, value=0, size=(16, 16)):
    rng = np.random.default_rng(0)
    for i in range(n):
        write_pair(root, f"a{i}", rng.integers(0, 255, (*size, 3), dtype=np.uint8), np.full(size, value, np.uint8))
    return root


# --- split lists ----------------------------------------------------------------------------------


def test_inspect_reports_split_names_that_have_no_files(simple_data, tmp_path, capsys):
    _split_files(simple_data, train=["s00", "s01", "s02", "ghost1"], val=["s03", "ghost2", "ghost3"])
    rc = main(["inspect", str(simple_data), "--out", str(tmp_path / "o"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1 and "none found" not in out
    assert "ERROR   1 name in" in out and "train.txt has no image/mask pair" in out and "- ghost1" in out
    assert "ERROR   2 names in" in out and "val.txt have no image/mask pair" in out and "- ghost3" in out
    # The pairs that no list names are said to be unused.
    assert "2 image/mask pairs are in no split file and not used: s04, s05" in out
    report = inspect_data(simple_data, chart=False)
    missing = [p for p in report["problems"] if "no image/mask pair" in p["title"]]
    assert [p["files"] for p in missing] == [["ghost1"], ["ghost2", "ghost3"]]


def test_a_name_in_two_split_files_is_reported_not_a_crash(simple_data, tmp_path):
    _split_files(simple_data, train=["s00", "s01", "s02"], val=["s02", "s03"])
    report = inspect_data(simple_data, chart=False)  # used to raise before any report
    twice = next(p for p in report["problems"] if "another split file" in p["title"])
    assert twice["files"] == ["s02 (in train.txt)"] and twice["severity"] == "error" and not twice["skippable"]
    assert report["splits"]["train"]["images"] == 3 and report["splits"]["val"]["images"] == 1  # kept in the first
    with pytest.raises(PixelwiseError, match=r"val\.txt is in another split file too: s02 \(in train\.txt\)"):
        open_dataset(simple_data, skip_bad=True)  # not a file problem: --skip-bad does not hide it


def test_skip_bad_leaves_out_split_names_without_files(simple_data):
    _split_files(simple_data, train=["s00", "s01", "s02", "ghost"], val=["s03"])
    ds = open_dataset(simple_data, skip_bad=True)
    assert [s.stem for s in ds.splits["train"]] == ["s00", "s01", "s02"] and "ghost" in ds.skipped


def test_split_lists_saved_by_windows_editors(simple_data):
    (simple_data / "splits").mkdir()
    (simple_data / "splits" / "train.txt").write_bytes(b"\xef\xbb\xbfs00\r\ns01\r\ns02\r\ns03\r\n")  # BOM, CRLF
    (simple_data / "splits" / "val.txt").write_bytes(b"\xef\xbb\xbfs04\r\ns05")
    ds = open_dataset(simple_data)
    assert [s.stem for s in ds.splits["train"]] == ["s00", "s01", "s02", "s03"]
    assert [s.stem for s in ds.splits["val"]] == ["s04", "s05"]


def test_split_lists_of_paths_as_windows_writes_them(simple_data):
    _split_files(
        simple_data, train=["images\\s00.png", "data\\images\\s01.png", "s02", "./images/s03.png"], val=["s04"]
    )
    ds = open_dataset(simple_data)
    assert [s.stem for s in ds.splits["train"]] == ["s00", "s01", "s02", "s03"]


@pytest.mark.parametrize("only", ["val", "test"])
def test_a_folder_with_only_one_evaluation_list_opens_for_that_split(simple_data, only):
    _split_files(simple_data, **{only: ["s00", "s01"]})
    ds = open_dataset(simple_data, validate_splits=(only,), classes=_classes(3))
    assert [s.stem for s in ds.splits[only]] == ["s00", "s01"] and ds.splits["train"] == []
    # Training needs train.txt and says so, naming the list it found.
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    msg = str(e.value)
    assert "\n" not in msg and f"has {only}.txt but no train.txt" in msg and "splits/train.txt" in msg


def _classes(n):
    return ClassInfo([f"class_{i}" for i in range(n)], default_palette(n), 255)


@pytest.mark.parametrize("only", ["val", "test"])
def test_evaluate_accepts_a_folder_with_only_val_or_test_list(trained_run, demo_data, tmp_path, capsys, only):
    data = tmp_path / "eval-only"
    for sub in ("images", "masks"):
        shutil.copytree(demo_data / sub, data / sub)
    shutil.copy(demo_data / "classes.yaml", data / "classes.yaml")
    stems = sorted(p.stem for p in (data / "images").iterdir())[:3]
    _split_files(data, **{only: stems})
    rc = main(["evaluate", str(trained_run), str(data), "--split", only, "--out", str(tmp_path / "e"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["images"] == 3


# --- masks of one class ---------------------------------------------------------------------------


def test_training_refuses_masks_of_one_class(tmp_path, capsys):
    root = _write_one_class(tmp_path / "d")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg and "is class 0" in msg and "cannot learn" in msg
    rc = main(["train", str(root), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"])
    assert rc == 2 and "is class 0 (class_0)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.safetensors").exists()
    # inspect says the same, as an error (exit status 1), and draws no imbalance of a class with itself.
    report = inspect_data(root, chart=False)
    assert report["errors"] == 1 and report["imbalance"] is None
    assert main(["inspect", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 1


def test_training_refuses_one_class_also_when_the_classes_file_lists_more(tmp_path):
    root = _write_one_class(tmp_path / "d", value=1)
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["sky", "tree", "road"]}))
    with pytest.raises(PixelwiseError, match=r"is class 1 \(tree\)"):
        open_dataset(root)
    # Evaluation on such data is fine: a model's classes are given, nothing is learnt from it.
    model_classes = ClassInfo(["sky", "tree", "road"], default_palette(3), 255)
    ds = open_dataset(root, classes=model_classes, validate_splits=("val",))
    assert ds.splits["val"]


def test_training_refuses_masks_that_are_all_ignore(tmp_path):
    root = _write_one_class(tmp_path / "d", value=255)
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["sky", "tree", "road"]}))  # 255: ignore
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    assert "every pixel of the 4 training masks is the ignore index 255" in str(e.value)


def test_a_validation_split_of_one_class_is_a_loud_warning(tmp_path):
    root = make_simple_dataset(tmp_path / "d", n=6, num_classes=3)
    for stem in ("s04", "s05"):
        Image.fromarray(np.zeros((24, 32), np.uint8), "L").save(root / "masks" / f"{stem}.png")
    _split_files(root, train=["s00", "s01", "s02", "s03"], val=["s04", "s05"])
    ds = open_dataset(root)
    warning = next(w for w in ds.warnings if "val masks show one class only" in w.title)
    assert "class_0" in warning.message() and "100 %" in warning.message()
    assert any("val masks show one class only" in p["title"] for p in inspect_data(root, chart=False)["problems"])


def test_masks_that_each_hold_one_class_look_like_image_labels(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(6):
        write_pair(tmp_path, f"c{i}", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.full((8, 8), i % 3))
    ds = open_dataset(tmp_path)
    assert any("every mask holds a single class" in w.title for w in ds.warnings)


# --- every problem at once ------------------------------------------------------------------------


def _three_problems(root):
    (root / "images" / "s01.png").write_bytes(b"")
    Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(root / "masks" / "s02.png")
    m = np.zeros((24, 32), np.uint8)
    m[0, 0] = 9
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b", "c"]}))
    Image.fromarray(m, "L").save(root / "masks" / "s03.png")


def test_train_lists_every_problem_at_once_and_points_to_inspect(simple_data, tmp_path, capsys):
    _three_problems(simple_data)
    rc = main(["train", str(simple_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    first, *rest = err.strip().splitlines()
    assert first.startswith(f"pixelwise: error: {simple_data}: 3 problems in the data; fix them")
    assert f"pixelwise inspect {simple_data}" in first and "--skip-bad" in first
    assert len(rest) == 3 and all(line.startswith("  - ") for line in rest)
    for name, what in (("s01.png", "1 image cannot be read"), ("s02.png", "1 mask differs in size"), ("s03.png", "9")):
        assert any(name in line and what in line for line in rest), name


def test_one_problem_stays_one_line_and_names_inspect_when_files_are_left_unnamed(simple_data):
    for i in range(5):
        (simple_data / "images" / f"s0{i}.png").write_bytes(b"")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("5 images cannot be read") and "and 2 more" in msg
    assert f"(pixelwise inspect {simple_data} lists all 5)" in msg


def test_the_inspect_command_named_carries_a_given_format(tmp_path):
    from format_fixtures import write_voc

    root, _ = write_voc(tmp_path / "voc")
    base = root / "VOCdevkit" / "VOC2012"
    jpgs = sorted((base / "JPEGImages").iterdir())
    for p in jpgs[:2]:
        p.write_bytes(b"")
    (base / "SegmentationClass" / f"{jpgs[2].stem}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root, "voc")
    assert f"pixelwise inspect {root} --format voc" in str(e.value).splitlines()[0]


# --- inspect: weights of stray pixels, counts -----------------------------------------------------


def test_a_stray_pixel_class_gets_no_weight_suggestion(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(4):
        m = np.zeros((32, 32), np.uint8)
        m[:, 16:] = 1
        if i == 0:
            m[0, 0] = 2  # one stray pixel of class 2
        write_pair(tmp_path, f"s{i}", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), m)
    report = inspect_data(tmp_path, val_fraction=0, chart=False)
    weights = report["suggested_class_weights"]
    assert weights["weights"][:2] == pytest.approx([1.0, 1.0], abs=1e-3) and weights["weights"][2] is None
    assert weights["too_few_pixels"] == ["class_2"]
    assert weights["median_weights"][2] > 1000  # what --class-weights median would give
    rare = next(p for p in report["problems"] if "fewer than 100 pixels" in p["title"])
    assert rare["heading"] == "1 class has fewer than 100 pixels in the training split"
    assert "class_2 (1 training pixel; --class-weights median would weigh it 2,047)" in rare["files"]
    text = format_report(report)
    assert "none for class_2: under 100 training pixels" in text and "below" not in text
    row = next(line for line in text.splitlines() if "class_2" in line and "%" in line)
    assert row.rstrip().endswith("-") and " %" in row


def test_suggested_weights_are_capped(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(4):
        m = np.zeros((64, 64), np.uint8)
        m[:, 32:] = 1
        m[:2, :60] = 2 if i == 0 else 1  # class 2: 120 pixels of 16384, weight far above the cap
        write_pair(tmp_path, f"s{i}", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), m)
    report = inspect_data(tmp_path, val_fraction=0, chart=False)
    assert report["suggested_class_weights"]["weights"][2] == 50.0
    assert report["suggested_class_weights"]["capped"] == ["class_2"]
    assert "(class_2 capped)" in format_report(report)


# --- palette masks, as pixelwise writes them ------------------------------------------------------


def test_palette_masks_written_by_pixelwise_read_back_as_the_same_indices(tmp_path):
    rng = np.random.default_rng(4)
    colors = default_palette(4)
    masks = {}
    for i in range(4):
        m = rng.integers(0, 4, (20, 24)).astype(np.uint8)
        m[0, :3] = 255  # the ignore index
        masks[f"p{i}"] = m
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "images" / f"p{i}.png")
        write_mask_png(tmp_path / "masks" / f"p{i}.png", m, colors=colors)
    with Image.open(tmp_path / "masks" / "p0.png") as im:
        assert im.mode == "P"  # a viewer shows the class colours
    assert np.array_equal(read_mask(tmp_path / "masks" / "p0.png"), masks["p0"].astype(np.int64))
    ds = open_dataset(tmp_path, val_fraction=0.25)
    assert ds.spec.encoding == "index" and ds.classes.num_classes == 4  # indices, not colours
    assert not any("colour" in w.title for w in ds.warnings)
    for s in ds.splits["train"] + ds.splits["val"]:
        _, mask = read_sample(s)
        assert np.array_equal(mask, masks[s.stem].astype(np.int64))
    report = inspect_data(tmp_path, chart=False)
    assert report["encoding"] == "index" and report["ignored_pixels"] == 4 * 3


def test_palette_and_grey_masks_mix_in_one_data_set(tmp_path):
    rng = np.random.default_rng(5)
    colors = default_palette(3)
    for i in range(4):
        m = rng.integers(0, 3, (10, 10)).astype(np.uint8)
        write_pair(tmp_path, f"m{i}", rng.integers(0, 255, (10, 10, 3), dtype=np.uint8), m)
        if i % 2:
            write_mask_png(tmp_path / "masks" / f"m{i}.png", m, colors=colors)
    ds = open_dataset(tmp_path, val_fraction=0.25)
    assert ds.spec.encoding == "index" and not ds.skipped and ds.classes.num_classes == 3


# --- colour-coded masks saved in other ways -------------------------------------------------------

COLOURS = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]


def _colour_data(root, save_first):
    """Five colour-coded masks with classes.yaml colours; the first saved by ``save_first(rgb, path)``."""
    rng = np.random.default_rng(6)
    labels = {}
    for i in range(5):
        lab = rng.integers(0, 3, (16, 16))
        if i == 0:
            lab[:] = 0 if save_first is None else lab
        labels[f"x{i}"] = lab
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"x{i}.png")
        rgb = np.array(COLOURS, np.uint8)[lab]
        path = root / "masks" / f"x{i}.png"
        (save_first if i == 0 and save_first else lambda a, p: Image.fromarray(a).save(p))(rgb, path)
    names = {"names": ["bg", "red", "green"], "colors": [list(c) for c in COLOURS]}
    (root / "classes.yaml").write_text(yaml.safe_dump(names))
    return labels


def _assert_decoded(root, labels):
    ds = open_dataset(root, val_fraction=0)
    assert ds.spec.encoding == "rgb" and not ds.skipped
    for s in ds.splits["train"]:
        assert np.array_equal(read_sample(s)[1], labels[s.stem]), s.stem
    return ds


def test_an_all_background_black_mask_in_a_colour_coded_data_set(tmp_path):
    labels = _colour_data(tmp_path, None)  # x0: every pixel (0, 0, 0), equal channels
    _assert_decoded(tmp_path, labels)


def test_a_colour_mask_saved_as_indexed_colour_is_read_through_its_palette(tmp_path):
    # An image editor's "indexed colour": a palette PNG whose index order is the editor's, not the classes'.
    labels = _colour_data(tmp_path, lambda a, p: Image.fromarray(a).quantize(colors=3).save(p))
    with Image.open(tmp_path / "masks" / "x0.png") as im:
        assert im.mode == "P" and not np.array_equal(np.asarray(im), labels["x0"])
    ds = _assert_decoded(tmp_path, labels)
    assert any("1 palette mask read as the colours of the palette" in n for n in ds.notes)
    # A grayscale (L) mask among colour masks is still refused: it holds no colours.
    Image.fromarray(labels["x1"].astype(np.uint8), "L").save(tmp_path / "masks" / "x1.png")
    with pytest.raises(PixelwiseError, match=r"x1.png: mask is single-channel \(L\)"):
        open_dataset(tmp_path, val_fraction=0)


# --- mask values that are no class indices --------------------------------------------------------


def test_16_bit_masks_with_instance_ids_are_not_taken_for_65536_classes(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(4):
        m = rng.integers(0, 3, (16, 16)).astype(np.uint16)
        m[0, 0] = 65535 if i == 0 else 2
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "images" / f"a{i}.png")
        Image.fromarray(m).save(tmp_path / "masks" / f"a{i}.png")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "a0.png (values up to 65535)" in msg and "65,536 classes" in msg
    report = inspect_data(tmp_path, chart=False)  # a report in moments, not a table of 65,536 classes
    assert report["errors"] == 1 and report["per_class"] == []


def test_a_0_255_mask_among_0_1_masks_is_named(tmp_path):
    rng = np.random.default_rng(8)
    for i in range(5):
        m = rng.integers(0, 2, (16, 16)).astype(np.uint8)
        write_pair(tmp_path, f"b{i}", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), m * 255 if i == 0 else m)
    ds = open_dataset(tmp_path)
    warning = next(w for w in ds.warnings if "hold only 0 and 255" in w.title)
    assert warning.items == [str(tmp_path / "masks" / "b0.png")] and "pixels are ignored" in warning.message()


# --- folders laid out another way -----------------------------------------------------------------


def test_images_in_split_sub_folders_are_pointed_at(tmp_path):
    src = make_simple_dataset(tmp_path / "flat", n=4)
    root = tmp_path / "nested"
    for sub in ("images", "masks"):
        shutil.copytree(src / sub, root / sub / "train")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    msg = str(e.value)
    assert "\n" not in msg and "sub-folders (train)" in msg and "splits/<split>.txt" in msg


def test_masks_named_with_a_suffix_get_a_renaming_hint(simple_data):
    for p in sorted((simple_data / "masks").iterdir()):
        p.rename(p.with_name(f"{p.stem}_mask.png"))
    report = inspect_data(simple_data, chart=False)
    orphans = next(p for p in report["problems"] if p["title"] == "masks have no image")
    assert "named <image stem>_mask: rename each to its image's stem" in orphans["todo"]
    # Nothing pairs, so nothing is counted: no warning about class values of masks that were never read.
    assert not any("never occur" in p["title"] for p in report["problems"])
    assert not any("train split is empty" in p["title"] for p in report["problems"])
