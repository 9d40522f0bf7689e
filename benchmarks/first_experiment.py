"""The classic first experiment of semantic segmentation, run with pixelwise on a CPU.

A small fully convolutional network, 128x128 inputs, 3 classes (background, disc, square),
pixel-wise cross-entropy and Adam, on a synthetic data set that a small network can learn: each
image holds a few discs and squares of random colours on a noisy background of random colours,
so only the outline tells a disc from a square and colour alone tells neither from the
background. The script:

1. writes the data set (pixelwise folder layout) into OUT/data;
2. trains through the pixelwise command line (`pixelwise train`, the command is printed);
3. scores the model on the held-out images (`pixelwise evaluate`);
4. scores a "model" that predicts background everywhere, with pixelwise.metrics, to show why
   pixel accuracy alone flatters.

    python benchmarks/first_experiment.py --out /tmp/first-experiment

It prints the figures; it passes no verdict.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pixelwise.cli import main as pixelwise_main
from pixelwise.metrics import ConfusionMatrix, compute_metrics

CLASSES = ["background", "disc", "square"]
COLORS = [[0, 0, 0], [230, 25, 75], [0, 130, 200]]
SIZE = 128

# The network: segmentation-models-pytorch's U-Net on timm's resnet10t with a light decoder (about
# 5.5 M weights), a fully convolutional encoder-decoder small enough for a CPU.
# pixelwise's `--arch fcn` is torchvision's FCN-ResNet50 (about 33 M weights), too slow here.
MODEL_FLAGS = ["--arch", "unet", "--encoder", "tu-resnet10t", "--model-kwargs", "decoder_channels=[64,32,16,16,8]"]
# Pixel-wise cross-entropy; Adam (pixelwise's AdamW with no weight decay is Adam), constant rate
# after one warm-up epoch; batches of 8 whole 128x128 images, no rescaling, horizontal flips only.
RECIPE_FLAGS = [
    "--loss", "ce", "--lr", "0.001", "--weight-decay", "0", "--schedule", "constant",
    "--crop-size", "128", "--scale-range", "1,1", "--color-jitter", "0", "--batch-size", "8",
]  # fmt: skip


def draw_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (128, 128, 3) uint8 image and its (128, 128) uint8 mask: 1-4 discs and squares."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    # Background: a random colour drifting to another across the image, plus noise.
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xx * np.cos(rng.uniform(0, 2 * np.pi)) + yy * np.sin(rng.uniform(0, 2 * np.pi))) / SIZE
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = a + (b - a) * t[..., None]
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, 3))
        r = rng.uniform(8, 24)
        cx, cy = rng.uniform(r * 0.5, SIZE - r * 0.5, 2)
        if cls == 1:
            region = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:
            region = (np.abs(xx - cx) <= r * 0.9) & (np.abs(yy - cy) <= r * 0.9)
        colour = rng.uniform(0, 255, 3)
        below = image[region].mean(0)
        while np.linalg.norm(colour - below) < 80:  # keep the outline visible
            colour = rng.uniform(0, 255, 3)
        image[region] = colour
        mask[region] = cls
    image = image + rng.normal(0, 8, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def write_dataset(root: Path, n_train: int, n_val: int, seed: int) -> Path:
    """The pixelwise folder layout: images/, masks/, classes.yaml, splits/{train,val}.txt."""
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"s{i:04d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        image, mask = draw_sample(np.random.default_rng([seed, i]))
        Image.fromarray(image, "RGB").save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, "L").save(root / "masks" / f"{stem}.png")
    (root / "splits" / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    meta = {"names": CLASSES, "colors": COLORS, "ignore_index": 255}
    (root / "classes.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return root


def background_only(data: Path) -> dict:
    """Metrics of predicting class 0 for every pixel of the val split."""
    cm = ConfusionMatrix(len(CLASSES), ignore_index=255)
    for stem in (data / "splits" / "val.txt").read_text().split():
        target = np.asarray(Image.open(data / "masks" / f"{stem}.png"), dtype=np.int64)
        cm.update(np.zeros_like(target), target)
    return compute_metrics(cm.matrix.numpy(), CLASSES)


def run(argv: list[str]) -> None:
    """Print one pixelwise command line as a shell line, then run it; a failure stops the script."""
    print("$ pixelwise " + shlex.join(argv), flush=True)
    code = pixelwise_main(argv)
    if code:
        raise SystemExit(f"pixelwise {argv[0]} exited with status {code}")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def curve(run_dir: Path) -> None:
    """Validation accuracy and mIoU after each epoch, from the run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_miou")]
    print("\nepoch  val pixel accuracy  val mIoU  train images/s")
    for r in rows:
        acc, miou = float(r["val_pixel_accuracy"]), float(r["val_miou"])
        print(f"{r['epoch']:>5}  {pct(acc):>18}  {pct(miou):>8}  {r.get('images_per_s', '')}")


def report(model: dict, baseline: dict, seconds: float) -> None:
    print(f"\nvalidation ({model['num_pixels']} pixels), whole run {seconds:.0f} s")
    print(f"{'':24}{'pixel accuracy':>16}{'mIoU':>10}  per-class IoU ({', '.join(CLASSES)})")
    for name, m in (("trained network", model), ("background everywhere", baseline)):
        per_class = ", ".join(pct(c["iou"]) for c in m["per_class"])
        print(f"{name:24}{pct(m['pixel_accuracy']):>16}{pct(m['miou']):>10}  {per_class}")
    share = baseline["per_class"][0]["gt_pixels"] / baseline["num_pixels"]
    print(f"background share of the val pixels: {pct(share)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="first-experiment", help="work folder (must not hold a run)")
    parser.add_argument("--train-images", type=int, default=240)
    parser.add_argument("--val-images", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=0.0, help="training seconds (default 0 = none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="", help="more `pixelwise train` flags, e.g. '--pretrained'")
    args = parser.parse_args()

    start = time.perf_counter()
    out = Path(args.out)
    data = write_dataset(out / "data", args.train_images, args.val_images, args.seed)
    run_dir = out / "run"
    train = ["train", str(data), "--out", str(run_dir), *MODEL_FLAGS, *RECIPE_FLAGS]
    train += ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.time_limit > 0:
        train += ["--time-limit", str(args.time_limit)]
    run(train + ["--channels-last", "--pretrained", "none", "--quiet", *shlex.split(args.extra)])
    run(["evaluate", str(run_dir), str(data), "--split", "val", "--backend", "torch", "--quiet"])
    model = json.loads((run_dir / "eval-val" / "metrics.json").read_text())
    curve(run_dir)
    report(model, background_only(data), time.perf_counter() - start)


if __name__ == "__main__":
    main()
