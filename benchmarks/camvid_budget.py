"""Same wall-clock budget, three recipes, scored the same way on CamVid val.

    python benchmarks/camvid_budget.py --data ../shared/data/camvid --budget 20m
    python benchmarks/camvid_budget.py --data ../shared/data/camvid --budget 60m --which a

(a) ``pixelwise train --budget B`` (the planner chooses the recipe);
(b) a hand-written loop as a user would write it: segmentation-models-pytorch U-Net/resnet34
    from scratch, cross-entropy ignoring void, Adam lr 1e-3, batch 4, full 480x360 frames padded
    to 480x384, random horizontal flip, DataLoader with default settings;
(c) torchvision LR-ASPP MobileNetV3-Large from scratch in the same loop, batch 8.

(b) and (c) train until the budget is used up, then predict val; (a) is given the whole budget
for everything it does. Every model is scored with pixelwise's confusion matrix on the 101 val
frames at full resolution, 11 classes, void (11) ignored. ``--throughput`` also measures the
training images/s of pixelwise and of loop (b) for the same model (U-Net/resnet34) on the same
384x384 crops. Results go to ``--out`` as JSON and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from pixelwise.metrics import ConfusionMatrix  # noqa: E402
from pixelwise.training.planner import parse_budget  # noqa: E402

NAMES = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
]
COLORS = [
    [128, 128, 128],
    [128, 0, 0],
    [192, 192, 128],
    [128, 64, 128],
    [60, 40, 222],
    [128, 128, 0],
    [192, 128, 128],
    [64, 64, 128],
    [64, 0, 128],
    [64, 64, 0],
    [0, 128, 192],
]
VOID = 11


def stems(data: Path, split: str) -> list[str]:
    """Split files list file names ("0016E5_07959.png"); the stems are what pairs images with masks."""
    return [Path(n).stem for n in (data / "splits" / f"{split}.txt").read_text().split()]


def load_pair(data: Path, stem: str) -> tuple[torch.Tensor, torch.Tensor]:
    img = np.asarray(Image.open(data / "images" / f"{stem}.png").convert("RGB"), dtype=np.float32) / 255.0
    img = (img - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    mask = np.asarray(Image.open(data / "masks" / f"{stem}.png"), dtype=np.int64)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)


class PlainCamVid(torch.utils.data.Dataset):
    """What a user writes: read the PNGs each time, pad to a multiple of 32, random h-flip."""

    def __init__(self, data: Path, split: str, train: bool, crop: int | None = None):
        self.data, self.names, self.train, self.crop = data, stems(data, split), train, crop

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        x, y = load_pair(self.data, self.names[i])
        if self.train and torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if self.crop:  # only for the like-for-like throughput measurement
            top = int(torch.randint(0, max(1, x.shape[1] - self.crop + 1), ()))
            left = int(torch.randint(0, max(1, x.shape[2] - self.crop + 1), ()))
            x, y = (
                x[:, top : top + self.crop, left : left + self.crop],
                y[top : top + self.crop, left : left + self.crop],
            )
        h, w = x.shape[1:]
        ph, pw = (-h) % 32, (-w) % 32
        if self.crop:
            ph, pw = self.crop - h, self.crop - w
        return F.pad(x, (0, pw, 0, ph)), F.pad(y, (0, pw, 0, ph), value=VOID)


def build(name: str) -> torch.nn.Module:
    if name == "unet-resnet34":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet34", encoder_weights=None, classes=len(NAMES))
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(NAMES))


def forward(model, x):
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def plain_loop(model, loader, device, seconds: float | None = None, steps: int | None = None) -> dict:
    """Adam lr 1e-3, cross-entropy ignoring void; until the time or the step count is used up."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train().to(device)
    start, done, images = time.perf_counter(), 0, 0
    while True:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(forward(model, x), y, ignore_index=VOID)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            images += x.shape[0]
            if (seconds is not None and time.perf_counter() - start >= seconds) or (
                steps is not None and done >= steps
            ):
                el = time.perf_counter() - start
                return {"steps": done, "images": images, "seconds": round(el, 1), "images_per_s": round(images / el, 2)}


@torch.no_grad()
def score(model, data: Path, device) -> dict:
    model.eval().to(device)
    cm = ConfusionMatrix(len(NAMES), VOID)
    for stem in stems(data, "val"):
        x, y = load_pair(data, stem)
        h, w = y.shape
        xp = F.pad(x, (0, (-w) % 32, 0, (-h) % 32))[None].to(device)
        logits = forward(model, xp)[..., :h, :w]
        cm.update(logits.argmax(1).cpu(), y[None])
    m = cm.compute(NAMES)
    return {"miou": m["miou"], "per_class_iou": {c["name"]: c["iou"] for c in m["per_class"]}}


def run_pixelwise(data: Path, out: Path, budget: str, device: str, classes_file: Path, seed: int = 0) -> dict:
    run = out / f"a-pixelwise-{budget}"
    cmd = [
        sys.executable,
        "-m",
        "pixelwise",
        "train",
        str(data),
        "--budget",
        budget,
        "--out",
        str(run),
        "--classes",
        str(classes_file),
        "--device",
        device,
        "--seed",
        str(seed),
        "--overwrite",
        "--quiet",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelwise",
            "evaluate",
            str(run),
            str(data),
            "--split",
            "val",
            "--classes",
            str(classes_file),
            "--device",
            device,
            "--quiet",
        ],
        check=True,
    )
    metrics = json.loads((run / "eval-val" / "metrics.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    return {
        "recipe": "a: pixelwise --budget",
        "wall_seconds": round(wall, 1),
        "miou": metrics["miou"],
        "per_class_iou": {c["name"]: c["iou"] for c in metrics["per_class"]},
        "plan": plan["choices"],
        "run": str(run),
    }


def run_plain(name: str, batch: int, data: Path, seconds: float, device, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build(name)
    loader = torch.utils.data.DataLoader(PlainCamVid(data, "train", True), batch_size=batch, shuffle=True)
    start = time.perf_counter()
    # The budget covers training and scoring; scoring 101 frames is timed once and kept out of training.
    t = plain_loop(model, loader, device, seconds=max(10.0, seconds - estimate_scoring(model, data, device)))
    s = score(model, data, device)
    return {
        "recipe": f"{'b' if name.startswith('unet') else 'c'}: plain loop {name} batch {batch}",
        "wall_seconds": round(time.perf_counter() - start, 1),
        **s,
        "train": t,
    }


def estimate_scoring(model, data: Path, device) -> float:
    model.eval().to(device)
    x, _ = load_pair(data, stems(data, "val")[0])
    with torch.no_grad():
        xp = F.pad(x, (0, 0, 0, (-x.shape[1]) % 32))[None].to(device)
        forward(model, xp)
        t = time.perf_counter()
        forward(model, xp)
    return (time.perf_counter() - t) * len(stems(data, "val")) * 1.2


def throughput(data: Path, out: Path, device: str, classes_file: Path, steps: int = 40) -> dict:
    """Training images/s for U-Net/resnet34 on 384x384 crops, batch 4: pixelwise vs the plain loop."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(PlainCamVid(data, "train", True, crop=384), batch_size=4, shuffle=True)
    plain = plain_loop(build("unet-resnet34"), loader, torch.device(device), steps=steps)
    run = out / "throughput-pixelwise"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelwise",
            "train",
            str(data),
            "--out",
            str(run),
            "--overwrite",
            "--classes",
            str(classes_file),
            "--arch",
            "unet",
            "--encoder",
            "resnet34",
            "--batch-size",
            "4",
            "--crop-size",
            "384",
            "--scale-range",
            "1,1",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            str(steps),
            "--loss",
            "ce",
            "--channels-last",
            "--device",
            device,
            "--quiet",
        ],
        check=True,
    )
    rows = (run / "metrics.csv").read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    pw = float(first[header.index("images_per_s")])
    return {
        "plain_images_per_s": plain["images_per_s"],
        "pixelwise_images_per_s": pw,
        "ratio": round(pw / plain["images_per_s"], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--budget", default="20m")
    p.add_argument(
        "--which", default="a,b,c", help="recipes to run, comma-separated (empty with --throughput: only that)"
    )
    p.add_argument("--throughput", action="store_true", help="also measure training images/s, (a) vs (b)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/camvid-budget")
    p.add_argument("--seed", type=int, default=0, help="random seed of every recipe (default 0)")
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes_file = out / "camvid-classes.yaml"
    classes_file.write_text(json.dumps({"names": NAMES, "colors": COLORS, "ignore_index": VOID}))
    seconds = parse_budget(args.budget)
    recipes = [w.strip() for w in args.which.split(",") if w.strip()]  # empty: only --throughput
    unknown = sorted(set(recipes) - {"a", "b", "c"})
    if unknown:
        p.error(f"--which: unknown recipe(s) {', '.join(unknown)}; choose from a, b, c")
    results = []
    for which in recipes:
        if which == "a":
            results.append(run_pixelwise(data, out, args.budget, args.device, classes_file, args.seed))
        elif which == "b":
            results.append(run_plain("unet-resnet34", 4, data, seconds, torch.device(args.device), args.seed))
        elif which == "c":
            results.append(
                run_plain("lraspp-mobilenet-v3-large", 8, data, seconds, torch.device(args.device), args.seed)
            )
        print(json.dumps(results[-1]), flush=True)
    report = {
        "budget": args.budget,
        "seed": args.seed,
        "device": args.device,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "results": results,
    }
    if args.throughput:
        report["throughput"] = throughput(data, out, args.device, classes_file)
    (out / f"results-{args.budget}.json").write_text(json.dumps(report, indent=2))
    print(f"\nbudget {args.budget} on {args.device} ({os.cpu_count()} CPUs)")
    print(f"{'recipe':<48} {'wall s':>8} {'val mIoU':>9}")
    for r in results:
        print(f"{r['recipe']:<48} {r['wall_seconds']:>8} {100 * r['miou']:>9.2f}")
    if args.throughput:
        t = report["throughput"]
        print(
            f"training images/s, U-Net/resnet34, 384x384 crops, batch 4: pixelwise {t['pixelwise_images_per_s']}, "
            f"plain loop {t['plain_images_per_s']}, ratio {t['ratio']}"
        )


if __name__ == "__main__":
    main()
