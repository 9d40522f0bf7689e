"""`pixelwise inspect`: the report a user reads before training, checked against direct counts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import write_pair
from format_fixtures import write_voc
from pixelwise.cli import main
from pixelwise.inspection import format_report, inspect_data

NAMES = ["road", "car", "person", "bike"]


@pytest.fixture
def street(tmp_path):
    """8 pairs of two sizes, classes.yaml with 4 classes (bike never drawn), 255 = ignore, splits."""
    root = tmp_path / "street"
    rng = np.random.default_rng(5)
    masks = {}
    for i in range(8):
        h, w = (20, 30) if i < 6 else (16, 16)
        m = np.zeros((h, w), np.uint8)
        m[h // 2 :, :] = 0
        if i % 2 == 0:
            m[2:10, 3:18] = 1  # car in half the images
        if i == 3:
            m[0:2, 0:2] = 2  # one small person
        m[-1, :] = 255  # ignored bottom row
        write_pair(root, f"f{i}", rng.integers(0, 255, (h, w, 3), dtype=np.uint8), m)
        masks[f"f{i}"] = m
    Image.open(root / "images" / "f1.png").convert("L").save(root / "images" / "f1.png")
    Image.open(root / "images" / "f2.png").convert("RGBA").save(root / "images" / "f2.png")
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": NAMES}))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(f"f{i}" for i in range(6)) + "\n")
    (root / "splits" / "val.txt").write_text("f6\nf7\n")
    return root, masks


def test_report_matches_direct_counts(street, tmp_path):
    root, masks = street
    r = inspect_data(root, out=tmp_path / "out")
    assert r["format"] == "folder" and r["encoding"] == "index"
    assert r["splits"]["train"] == {"images": 6, "usable": 6} and r["splits"]["val"]["images"] == 2
    counts = np.zeros(4, np.int64)
    train_counts = np.zeros(4, np.int64)
    images_with = np.zeros(4, np.int64)
    for stem, m in masks.items():
        c = np.bincount(m[m != 255].ravel(), minlength=4)
        counts += c
        images_with += c > 0
        if int(stem[1:]) < 6:
            train_counts += c
    assert [c["pixels"] for c in r["per_class"]] == counts.tolist()
    assert [c["images"] for c in r["per_class"]] == images_with.tolist() == [8, 4, 1, 0]
    assert [c["train_pixels"] for c in r["per_class"]] == train_counts.tolist()
    labelled = counts.sum()
    assert r["per_class"][1]["share"] == pytest.approx(counts[1] / labelled, abs=1e-6)
    assert r["ignored_pixels"] == 6 * 30 + 2 * 16
    assert r["imbalance"] == {"ratio": round(counts[0] / counts[2], 2), "most": "road", "least": "person"}
    # Median-frequency weights, computed here from the training counts; person (4 pixels) gets none.
    freq = train_counts / train_counts.sum()
    median = np.median(freq[freq > 0])
    assert r["suggested_class_weights"]["median_weights"][2] == pytest.approx(median / freq[2], abs=1e-3)
    kept = train_counts * (train_counts >= 100)
    freq = kept / kept.sum()
    med = np.median(freq[freq > 0])
    want = [med / f if f else None for f in freq]
    assert r["suggested_class_weights"]["weights"][:2] == pytest.approx(want[:2], abs=1e-3)
    assert r["suggested_class_weights"]["weights"][2:] == [None, None]
    assert r["suggested_class_weights"]["too_few_pixels"] == ["person"]
    sizes = r["images"]["sizes"]
    assert sizes["distinct"] == 2 and sizes["most_common"][0] == {"width": 30, "height": 20, "images": 6}
    assert sizes["height"] == {"min": 16, "median": 20.0, "max": 20}
    assert r["images"]["modes"] == dict(Counter({"RGB": 6, "L": 1, "RGBA": 1}))
    assert set(r["images"]["converted"]) == {"L", "RGBA"}
    titles = [p["title"] for p in r["problems"]]
    assert "classes never occur in the checked masks" in titles  # bike
    assert next(p for p in r["problems"] if p["title"].startswith("classes never"))["files"] == ["bike"]
    assert r["errors"] == 0
    chart = Image.open(r["chart"])
    assert chart.format == "PNG" and chart.size[0] >= 600
    assert json.loads((tmp_path / "out" / "report.json").read_text())["per_class"] == r["per_class"]
    text = format_report(r)
    assert "format: folder (detected" in text and "bike" in text and "problems:" in text


def test_every_problem_is_listed_with_files_and_what_to_do(street, tmp_path, capsys):
    root, _ = street
    (root / "images" / "f0.png").write_bytes(b"")
    Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(root / "masks" / "f4.png")
    m = np.zeros((20, 30), np.uint8)
    m[0, 0] = 9
    Image.fromarray(m, "L").save(root / "masks" / "f5.png")
    (root / "masks" / "f9.png").write_bytes(b"")  # a mask without an image
    rc = main(["inspect", str(root), "--out", str(tmp_path / "o"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1
    for expected in (
        "ERROR   1 image cannot be read",
        "f0.png",
        "ERROR   1 mask differs in size from its image",
        "f4.png is 5x5, image is 30x20",
        "1 mask has values that are neither a class nor the ignore index",
        "f5.png (value 9)",
        "ERROR   1 mask has no image",
        "f9.png",
        "what to do:",
        "--skip-bad",
    ):
        assert expected in out, expected
    assert "3 checked" not in out and "8 checked, 5 usable, 3 unusable" in out
    # The split counts say how many of each split's images can be used (the unusable f0, f4, f5 are in train).
    assert "splits:    train 6 (3 usable), val 2, test 0 images" in out
    for plural_slip in ("1 images", "1 masks", "1 stems", "1 errors", "1 classes", "1 names"):
        assert plural_slip not in out, plural_slip
    rc = main(["inspect", str(root), "--json", "--skip-bad", "--out", str(tmp_path / "o")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0  # with --skip-bad the rest is usable
    assert report["errors"] == 4 and report["images"]["unusable"] == 3
    bad = {p["title"]: p["files"] for p in report["problems"] if p["severity"] == "error"}
    assert any("f0.png" in f for f in bad["images cannot be read"])


def test_inspect_detects_and_prints_the_format(tmp_path, capsys):
    root, _ = write_voc(tmp_path / "voc")
    rc = main(["inspect", str(root), "--out", str(tmp_path / "o"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "format: voc (detected: JPEGImages/ and SegmentationClass/)" in out
    assert "mask encoding: index" in out and "aeroplane" in out and "ignored pixels (255): 32" in out


def test_each_file_is_opened_once(street, tmp_path, monkeypatch):
    root, _ = street
    opened = Counter()
    real_open = Image.open

    def counting_open(fp, *a, **k):
        opened[str(fp)] += 1
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", counting_open)
    inspect_data(root, chart=False)
    files = [str(p) for d in ("images", "masks") for p in sorted((root / d).iterdir())]
    assert {f: opened[f] for f in files} == {f: 1 for f in files}


def test_inspect_help_and_bad_folder(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "--help"])
    assert e.value.code == 0 and "--format" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "data folder not found" in capsys.readouterr().err
