"""Working resolution: the network sees each image with its longer side at most ``max_side`` px;
masks, probabilities and scores stay at the image's own size."""

from __future__ import annotations

import pytest

from pixelwise.data.transforms import working_size


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
