"""Training throughput with 1, 2, ... processes under torchrun, on the synthetic demo data.

    python benchmarks/distributed_scaling.py --nproc 1,2,4,8 --images 512 --size 256 --batch-size 64

For each process count it runs ``torchrun --standalone --nproc_per_node=N -m pixelwise train``
with the same global batch, then prints the training images/s of the last epoch (all processes
together, as logged by rank 0), the speed-up over the first count and the efficiency
(speed-up / N * first count). It prints ratios, not verdicts.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", default="1,2", help="comma-separated process counts (default 1,2)")
    ap.add_argument("--images", type=int, default=64, help="synthetic images (default 64)")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    ap.add_argument("--batch-size", type=int, default=16, help="global batch (default 16)")
    ap.add_argument("--epochs", type=int, default=2, help="the last one is measured (default 2)")
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--device", default="auto", help="auto (GPUs when present) or cpu")
    ap.add_argument("--workdir", default=None, help="where data and runs go (default a temporary folder)")
    args = ap.parse_args()

    from pixelwise.data.synthetic import make_demo_dataset

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pixelwise-scaling-"))
    data = work / "data"
    if not (data / "images").is_dir():
        make_demo_dataset(data, num_images=args.images, size=args.size, seed=0)
    counts = [int(n) for n in args.nproc.split(",")]
    rates: dict[int, float] = {}
    for n in counts:
        out = work / f"run-{n}"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            "-m",
            "pixelwise",
            "train",
            str(data),
            "--out",
            str(out),
            "--overwrite",
            "--quiet",
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--crop-size",
            str(args.size),
            "--arch",
            args.arch,
            "--encoder",
            args.encoder,
            "--device",
            args.device,
            "--val-fraction",
            "0.1",
        ]
        proc = subprocess.run(cmd, env={**os.environ}, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{n} processes: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        rates[n] = float(rows[-1]["images_per_s"])
    base_n = counts[0]
    print(f"{'processes':>9}  {'images/s':>9}  {'speed-up':>8}  {'efficiency':>10}")
    for n in counts:
        speed_up = rates[n] / rates[base_n]
        print(f"{n:>9}  {rates[n]:>9.1f}  {speed_up:>8.2f}  {speed_up * base_n / n:>10.2f}")
    print(
        f"global batch {args.batch_size}, {args.arch}/{args.encoder}, {args.images} images of {args.size}px, "
        f"device {args.device}; data and runs in {work}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
