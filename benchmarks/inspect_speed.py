"""Time `pixelwise inspect` on synthetic image/mask pairs (default: 1000 pairs of 480x360).

Writes the pairs into a temporary folder (PNG images with texture, index masks with blocky
regions of 12 classes and an ignore value, like CamVid), then runs the full inspect, chart and
report included, the given number of times, and prints the wall-clock seconds of each run and
pairs per second. It prints figures, not a verdict.

    python benchmarks/inspect_speed.py                     # 1000 pairs, 480x360, 3 runs
    python benchmarks/inspect_speed.py --pairs 50 --runs 1 # a quick check that it works
    taskset -c 0,1 python benchmarks/inspect_speed.py      # on exactly 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def make_pairs(root: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    """n pairs in the pixelwise folder layout, with a classes.yaml of 11 classes and 11 = ignore."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    names = ", ".join(f"c{i}" for i in range(11))
    (root / "classes.yaml").write_text(f"names: [{names}]\nignore_index: 11\n")

    def one(i: int) -> None:
        rng = np.random.default_rng(seed + i)
        small = rng.integers(0, 12, (height // 24 + 1, width // 24 + 1))
        mask = np.kron(small, np.ones((24, 24), np.int64))[:height, :width].astype(np.uint8)
        base = (mask.astype(np.int32) * 20)[..., None] + rng.integers(0, 60, (height, width, 3))
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(root / "images" / f"f{i:05d}.png")
        Image.fromarray(mask, "L").save(root / "masks" / f"f{i:05d}.png")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, range(n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--read-threads", type=int, default=None, help="reader threads (default: as pixelwise chooses)")
    args = ap.parse_args()

    from pixelwise.inspection import inspect_data

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="pixelwise-inspect-bench-") as tmp:
        data = Path(tmp) / "data"
        t = time.perf_counter()
        make_pairs(data, args.pairs, args.width, args.height)
        print(
            f"wrote {args.pairs} pairs of {args.width}x{args.height} in {time.perf_counter() - t:.1f} s "
            f"({cores} cores available)"
        )
        for run in range(args.runs):
            t = time.perf_counter()
            report = inspect_data(data, out=Path(tmp) / "report", read_threads=args.read_threads)
            dt = time.perf_counter() - t
            assert report["images"]["usable"] == args.pairs, report["problems"]
            print(f"run {run + 1}: inspect of {args.pairs} pairs took {dt:.2f} s ({args.pairs / dt:.0f} pairs/s)")


if __name__ == "__main__":
    main()
