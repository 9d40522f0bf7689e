"""Same wall-clock budget, three recipes, scored the same way on CamVid val; several seeds in one go.

(a) ``pixelwise train --budget B`` (the planner chooses the recipe), scored by ``pixelwise evaluate
    RUN DATA --split val``: mIoU, per-class IoU and Dice, and boundary IoU and latency when evaluate
    reports them (metrics.json keys ``boundary_iou`` and ``latency``; read with .get);
(b) a hand-written loop as a user would write it: segmentation-models-pytorch U-Net/resnet34
    from scratch, cross-entropy ignoring void, Adam lr 1e-3, batch 4, full 480x360 frames padded
    to 480x384, random horizontal flip, DataLoader with default settings;
(c) torchvision LR-ASPP MobileNetV3-Large from scratch in the same loop, batch 8.

(b) and (c) train until the budget is used up, then predict val; (a) is given the whole budget
for everything it does (its evaluation comes after, outside the budget). (b) and (c) are scored
with pixelwise's confusion matrix on the 101 val frames at full resolution, 11 classes, void (11)
ignored (no boundary IoU or latency for them). Every recipe runs once per seed of ``--seeds``,
one after the other; ``--train-args`` / ``--eval-args`` go to ``pixelwise train`` / ``evaluate``
of (a). ``--throughput`` also measures the training images/s of pixelwise and of loop (b) for the
same model (U-Net/resnet34) on the same 384x384 crops. Printed: one line per run (seed, the plan:
arch/encoder, crop, max_side, epochs done/planned, planned steps, loss; val mIoU, boundary IoU,
ms per image), per-class IoU per run, and mean / min / max / range over the seeds; everything goes
to ``--out``/results-BUDGET.json.

Commands (run on a quiet machine, nothing else running; wall times on 2 cores):

    # (a) at 20 minutes, float32, three seeds: about 3 x (20 min + 1 min evaluation) = 65 min
    python benchmarks/camvid_budget.py --budget 20m --which a --seeds 0,1,2 --train-args "--no-amp" --out /tmp/cvb20
    # the same with a lever, e.g. OHEM, or a latency bound: about 65 min each
    python benchmarks/camvid_budget.py --budget 20m --which a --seeds 0,1,2 --train-args "--no-amp --loss ohem" --out /tmp/cvb20ohem
    python benchmarks/camvid_budget.py --budget 20m --which a --seeds 0,1,2 --train-args "--no-amp --max-latency 40" --out /tmp/cvb20lat40
    # 2 hours, three seeds: about 6 h 10 min
    python benchmarks/camvid_budget.py --budget 2h --which a --seeds 0,1,2 --train-args "--no-amp" --out /tmp/cvb2h
    # baselines (b) and (c) at 20 minutes, three seeds each: about 2 h
    python benchmarks/camvid_budget.py --budget 20m --which b,c --seeds 0,1,2 --out /tmp/cvb20bc
    # training throughput alone: about 3 min
    python benchmarks/camvid_budget.py --which "" --throughput --out /tmp/cvbthr
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
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


# The recipe a run trained (config.yaml, else plan.json choices), in this order; keys neither has are None.
PLAN_KEYS = ("arch", "encoder", "crop_size", "max_side", "batch_size", "epochs", "loss", "class_weights")


def pixelwise_cli(args: list[str]) -> float:
    """Run ``python -m pixelwise ARGS`` (failing loudly) and return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pixelwise", *args], check=True)
    return round(time.perf_counter() - start, 1)


def train_budget(data: Path, run: Path, budget: str, seed: int, device: str, extra: list[str]) -> float:
    """``pixelwise train DATA --budget B --seed S [extra]`` into ``run``; its wall time in seconds."""
    args = ["train", str(data), "--budget", budget, "--out", str(run), "--seed", str(seed)]
    return pixelwise_cli([*args, "--device", device, "--overwrite", "--quiet", *extra])


def evaluate_split(run: Path, data: Path, split: str, device: str, extra: list[str]) -> dict:
    """``pixelwise evaluate RUN DATA --split S`` into RUN/eval-S; the summary of its metrics.json."""
    out = run / f"eval-{split}"
    args = ["evaluate", str(run), str(data), "--split", split, "--out", str(out), "--overwrite"]
    wall = pixelwise_cli([*args, "--device", device, "--examples", "0", "--quiet", *extra])
    return {**eval_summary(json.loads((out / "metrics.json").read_text())), "eval_wall_seconds": wall}


def eval_summary(metrics: dict) -> dict:
    """mIoU, Dice and per-class IoU/Dice of a metrics.json; boundary IoU and latency when evaluate reports them."""
    boundary = metrics.get("boundary_iou") or {}
    per_class_b = boundary.get("per_class") if isinstance(boundary, dict) else None
    if isinstance(per_class_b, list):  # [{"name": .., "iou": ..}] or plain values in class order
        names = [c["name"] for c in metrics["per_class"]]
        per_class_b = {
            (b.get("name") if isinstance(b, dict) else n): (b.get("iou") if isinstance(b, dict) else b)
            for n, b in zip(names, per_class_b)
        }
    return {
        "miou": metrics.get("miou"),
        "mean_dice": metrics.get("mean_dice"),
        "per_class_iou": {c["name"]: c["iou"] for c in metrics["per_class"]},
        "per_class_dice": {c["name"]: c.get("dice") for c in metrics["per_class"]},
        "boundary_iou": boundary.get("mean") if isinstance(boundary, dict) else boundary,
        "boundary_iou_per_class": per_class_b,
        "latency": metrics.get("latency"),
        "latency_ms": latency_ms(metrics.get("latency")),
    }


def latency_ms(value) -> float | None:
    """Milliseconds per image from a latency record: a number, or a dict with a key such as ``ms_per_image``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        for key in ("median_ms_per_image", "ms_per_image", "median_ms", "mean_ms", "ms", "latency_ms"):
            if isinstance(value.get(key), (int, float)):
                return float(value[key])
        for key, v in value.items():
            if "ms" in key and isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
    return None


def plan_summary(run: Path) -> dict:
    """The recipe trained (PLAN_KEYS: config.yaml, else the plan's choices), the plan's step/epoch estimate,
    anything it says about latency, and what training did."""
    import yaml

    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else {}
    choices, estimates = plan.get("choices", {}), plan.get("estimates", {})
    config_path = run / "config.yaml"
    config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    out = {k: config.get(k, choices.get(k)) for k in PLAN_KEYS}
    out["planned_steps"], out["planned_epochs"] = estimates.get("steps"), estimates.get("epochs")
    out["latency"] = {
        f"{where}.{k}": v
        for where, d in (("plan", plan), ("choices", choices), ("estimates", estimates))
        for k, v in d.items()
        if "latency" in k
    } or None
    out["overridden"] = plan.get("overridden")
    out.update(training_done(run))
    return out


def training_done(run: Path) -> dict:
    """Epochs trained and the median training images/s, from the run's metrics.csv."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {"epochs_done": None, "images_per_s": None}
    rows = list(csv.DictReader(path.read_text().splitlines()))
    rates = sorted(float(r["images_per_s"]) for r in rows if r.get("images_per_s"))
    return {"epochs_done": len(rows), "images_per_s": rates[len(rates) // 2] if rates else None}


def run_pixelwise(data: Path, out: Path, args: argparse.Namespace, classes_file: Path, seed: int) -> dict:
    """Recipe (a) for one seed: train with the budget, then score val with ``pixelwise evaluate``."""
    run = out / f"a-pixelwise-{args.budget}-seed{seed}"
    extra = ["--classes-file", str(classes_file), *shlex.split(args.train_args)]
    wall = train_budget(data, run, args.budget, seed, args.device, extra)
    scores = evaluate_split(run, data, "val", args.device, shlex.split(args.eval_args))
    return {
        "recipe": "a: pixelwise --budget",
        "seed": seed,
        "wall_seconds": wall,
        "train_args": args.train_args,
        **scores,
        "plan": plan_summary(run),
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
        "seed": seed,
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
            "--classes-file",
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


def spread(values: list) -> dict | None:
    """Mean, min, max and range of the values that are not None (None when there are none)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return None
    return {"n": len(v), "mean": sum(v) / len(v), "min": min(v), "max": max(v), "range": max(v) - min(v)}


def summarise(results: list[dict]) -> dict:
    """Per recipe, over its seeds: the spread of val mIoU, boundary IoU, latency and each class's IoU."""
    out = {}
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        runs = [r for r in results if r["recipe"] == recipe]
        names = list(runs[0]["per_class_iou"])
        out[recipe] = {
            "seeds": [r["seed"] for r in runs],
            "miou": spread([r["miou"] for r in runs]),
            "boundary_iou": spread([r.get("boundary_iou") for r in runs]),
            "latency_ms": spread([r.get("latency_ms") for r in runs]),
            "per_class_iou": {n: spread([r["per_class_iou"].get(n) for r in runs]) for n in names},
            "boundary_iou_per_class": {
                n: spread([(r.get("boundary_iou_per_class") or {}).get(n) for r in runs]) for n in names
            },
        }
    return out


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def plan_text(plan: dict | None) -> str:
    """'unet/resnet10t crop 192 side 0 ep 19/20 steps 962 ce+dice' from a plan summary ('-' for a plain loop)."""
    if not plan:
        return "-"
    g = {k: "-" if v is None else v for k, v in plan.items()}
    return (
        f"{g.get('arch')}/{g.get('encoder')} crop {g.get('crop_size')} side {g.get('max_side')} "
        f"ep {g.get('epochs_done')}/{g.get('epochs')} steps~{g.get('planned_steps')} {g.get('loss')}"
    )


def print_runs(results: list[dict]) -> None:
    """One line per run (seed, plan, scores), then each run's per-class IoU (%)."""
    print(f"\n{'recipe':<34} {'seed':>4} {'wall s':>7} {'val mIoU':>8} {'bIoU':>6} {'ms/img':>7}  plan")
    for r in results:
        lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
        print(
            f"{r['recipe'][:34]:<34} {r['seed']:>4} {r['wall_seconds']:>7} {pct(r['miou']):>8} "
            f"{pct(r.get('boundary_iou')):>6} {lat:>7}  {plan_text(r.get('plan'))}"
        )
    names = list(results[0]["per_class_iou"]) if results else []
    print(f"\nper-class IoU (%)\n{'recipe':<6} {'seed':>4} " + " ".join(f"{n[:7]:>7}" for n in names))
    for r in results:
        cells = " ".join(f"{pct(r['per_class_iou'].get(n)):>7}" for n in names)
        print(f"{r['recipe'].split(':')[0]:<6} {r['seed']:>4} {cells}")


def print_summary(summary: dict) -> None:
    """Mean / min / max / range over seeds of each recipe, overall and per class (%; latency in ms)."""
    for recipe, s in summary.items():
        print(f"\n{recipe}: seeds {s['seeds']}")
        rows = [
            ("val mIoU", s["miou"], 100),
            ("boundary IoU", s["boundary_iou"], 100),
            ("ms/image", s["latency_ms"], 1),
        ]
        rows += [(f"  {n}", v, 100) for n, v in s["per_class_iou"].items()]
        print(f"  {'':<16} {'mean':>7} {'min':>7} {'max':>7} {'range':>7}")
        for label, v, k in rows:
            if v is not None:
                print(f"  {label:<16} " + " ".join(f"{k * v[f]:>7.2f}" for f in ("mean", "min", "max", "range")))


def glue_option_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``--train-args "--no-amp"`` as ``--train-args=--no-amp``: argparse takes a value that starts with
    "--" for an option of its own."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_args() -> argparse.Namespace:
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
    p.add_argument("--seeds", help="comma-separated seeds, run one after the other, e.g. 0,1,2 (default: --seed)")
    p.add_argument("--train-args", default="", help='extra options of `pixelwise train` for (a), e.g. "--no-amp"')
    p.add_argument(
        "--eval-args", default="", help='extra options of `pixelwise evaluate` for (a), e.g. "--backend torch"'
    )
    args = p.parse_args(glue_option_values(sys.argv[1:], ("--train-args", "--eval-args")))
    args.recipes = [w.strip() for w in args.which.split(",") if w.strip()]  # empty: only --throughput
    unknown = sorted(set(args.recipes) - {"a", "b", "c"})
    if unknown:
        p.error(f"--which: unknown recipe(s) {', '.join(unknown)}; choose from a, b, c")
    try:
        args.seed_list = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers such as 0,1,2, got {args.seeds!r}")
    return args


def run_recipe(which: str, seed: int, data: Path, out: Path, args: argparse.Namespace, classes_file: Path) -> dict:
    seconds, device = parse_budget(args.budget), torch.device(args.device)
    if which == "a":
        return run_pixelwise(data, out, args, classes_file, seed)
    if which == "b":
        return run_plain("unet-resnet34", 4, data, seconds, device, seed)
    return run_plain("lraspp-mobilenet-v3-large", 8, data, seconds, device, seed)


def main() -> None:
    args = parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes_file = out / "camvid-classes.yaml"
    classes_file.write_text(json.dumps({"names": NAMES, "colors": COLORS, "ignore_index": VOID}))
    parse_budget(args.budget)  # a bad budget stops here, before anything runs
    results, failed = [], []
    for which in args.recipes:
        for seed in args.seed_list:
            try:
                results.append(run_recipe(which, seed, data, out, args, classes_file))
            except subprocess.CalledProcessError as e:  # one run failing does not lose the others
                failed.append(
                    {"recipe": which, "seed": seed, "error": f"exit status {e.returncode}: {shlex.join(e.cmd)}"}
                )
                print(f"({which}) seed {seed}: FAILED, {failed[-1]['error']}", flush=True)
                continue
            r = results[-1]
            print(f"{r['recipe']} seed {seed}: val mIoU {pct(r['miou'])} %, {r['wall_seconds']} s", flush=True)
    report = {
        "budget": args.budget,
        "seeds": args.seed_list,
        "train_args": args.train_args,
        "eval_args": args.eval_args,
        "device": args.device,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "results": results,
        "failed": failed,
        "summary": summarise(results),
    }
    if args.throughput:
        report["throughput"] = throughput(data, out, args.device, classes_file)
    path = out / f"results-{args.budget}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nbudget {args.budget} on {args.device} ({os.cpu_count()} CPUs), train args {args.train_args!r}")
    if results:
        print_runs(results)
        print_summary(report["summary"])
    if args.throughput:
        t = report["throughput"]
        print(
            f"training images/s, U-Net/resnet34, 384x384 crops, batch 4: pixelwise {t['pixelwise_images_per_s']}, "
            f"plain loop {t['plain_images_per_s']}, ratio {t['ratio']}"
        )
    for f in failed:
        print(f"({f['recipe']}) seed {f['seed']}: FAILED ({f['error']})")
    print(f"results: {path}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
