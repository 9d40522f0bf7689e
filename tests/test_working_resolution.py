"""Working resolution: the network sees each image with its longer side at most ``max_side`` px;
masks, probabilities and scores stay at the image's own size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelwise.bundle import Bundle, InputSpec
from pixelwise.data.transforms import working_size
from pixelwise.errors import PixelwiseError


@pytest.mark.parametrize(
    ("h", "w", "max_side", "expected"),
    [
        (360, 480, 0, (360, 480)),  # 0 = native
        (360, 480, 480, (360, 480)),  # fits exactly
        (360, 480, 1000, (360, 480)),  # never upscaled
        (360, 480, 240, (180, 240)),
        (480, 360, 240, (240, 180)),  # portrait: the longer side is the height
        (1072, 1920, 512, (286, 512)),  # 1072 * 512 / 1920 = 285.87
        (3, 1000, 16, (1, 16)),  # a thin strip keeps at least 1 px
        (100, 100, 16, (16, 16)),
    ],
)
def test_working_size(h, w, max_side, expected):
    assert working_size(h, w, max_side) == expected


# --- The bundle records it: model.json "input": {"max_side": N} ----------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_v1" / "model.json"


def test_a_bundle_without_input_is_native_size_and_max_side_round_trips():
    old = json.loads(FIXTURE.read_text())
    assert "input" not in old
    bundle = Bundle.from_dict(old, "model.json")
    assert bundle.input == InputSpec(max_side=0)
    bundle.input = InputSpec(max_side=256)
    written = bundle.to_dict()
    assert written["input"] == {"max_side": 256}
    assert Bundle.from_dict(json.loads(json.dumps(written)), "model.json").input.max_side == 256


@pytest.mark.parametrize(
    "value",
    [
        [],
        "256",
        256.0,
        True,
        -1,
        1,
        15,
        16385,
        {"max_side": "big"},
        {"max_side": 8},
        {"max_sides": 256},
        {"max_side": None},
    ],
)
def test_a_damaged_input_section_is_one_line_naming_model_json(value):
    meta = json.loads(FIXTURE.read_text())
    meta["input"] = value if isinstance(value, (dict, list)) else {"max_side": value}
    with pytest.raises(PixelwiseError, match=r"model\.json: 'input") as caught:
        Bundle.from_dict(meta, "model.json")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("max_side", [0, 16, 512, 16384])
def test_every_allowed_max_side_loads(max_side):
    meta = json.loads(FIXTURE.read_text())
    meta["input"] = {"max_side": max_side}
    assert Bundle.from_dict(meta, "model.json").input.max_side == max_side
