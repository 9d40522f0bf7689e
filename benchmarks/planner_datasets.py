"""One budget, several data sets: what the planner chooses on each, and what it scores on held-out images.

For each set of ``--sets``: ``pixelwise train DATA --budget B --seed S [--train-args]``, then
``pixelwise evaluate RUN DATA --split test`` (CamVid: val) on images that training never saw. Printed per set:
the plan (from the run's config.yaml and plan.json: arch, encoder, crop_size, max_side, epochs,
loss, class_weights, and latency when the plan states one, with the planner's reasons for crop and
working resolution) and the result (mIoU, per-class IoU, Dice of the object class for binary
sets, boundary IoU and latency when evaluate reports them). Everything goes to
``--out``/results-BUDGET-seedS.json.

The sets (written under ``--out``/data, outside the repository, and reused by later runs):

- ``isbi``: the 30 ISBI 2012 EM slices (512x512 grayscale) of ``--isbi``, masks converted to
  0 = cell interior, 1 = membrane (the shipped masks have 0 = membrane, 255 = interior, and 255
  is pixelwise's default ignore index); splits by depth: train slice00-19, val slice20-24, test
  slice25-29. Membrane Dice and IoU are pixel-level, over the 5 test slices pooled.
- ``synthetic256``: the demo's scenes, ``generate_sample(rng([data_seed, i]), 256)``; images
  0..N-1 split into train/val exactly as ``pixelwise demo`` splits them (``write_seeded_splits``,
  20 % val), images N..N+T-1 are the test split (``--images N``, ``--test-images T``).
- ``synthetic1280``: the same scenes (same seeds) rendered at 1280 px, objects scaled alike, image
  and mask cut to their top 960 rows: 1280x960. The scenes come from the same seeds; a few draws
  depend on the size, so some scenes differ from their 256 px twin (same distribution). Rendering
  takes 0.5-1 s per image and core (about 3-6 min for the 400 images on 2 cores); the time is
  printed and stored in DATA/prepared.json.
- ``camvid`` (not in the default ``--sets``): ``--camvid`` read in place with its 11 classes (void
  ignored), scored on val (its test frames are not in the shared folder); camvid_budget.py runs
  the same recipe over several seeds.

Commands (a quiet machine, nothing else running; wall times on 2 cores):

    # all three sets at 20 minutes, float32: about 3 x (20 min + 1-2 min evaluation) + 5 min data = 75 min
    python benchmarks/planner_datasets.py --budget 20m --train-args "--no-amp" --out /tmp/plds20
    # the 1280x960 vs 256 px check alone (issue: held-out mIoU within 3 points): about 45 min
    python benchmarks/planner_datasets.py --sets synthetic256,synthetic1280 --budget 20m --train-args "--no-amp" --out /tmp/plds20
    # another seed of everything: about 65 min (the data is reused)
    python benchmarks/planner_datasets.py --budget 20m --seed 1 --train-args "--no-amp" --out /tmp/plds20
    # CamVid through the same script, for the one table of plans: about 22 min
    python benchmarks/planner_datasets.py --sets camvid --budget 20m --train-args "--no-amp" --out /tmp/plds20
    # only write the data sets (and time the 1280 px rendering): about 3-6 min
    python benchmarks/planner_datasets.py --prepare-only --out /tmp/plds20
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from camvid_budget import (  # noqa: E402
    COLORS,
    NAMES,
    VOID,
    evaluate_split,
    glue_option_values,
    pct,
    plan_summary,
    train_budget,
)
from pixelwise.data.synthetic import (  # noqa: E402
    DEMO_CLASSES,
    DEMO_COLORS,
    IGNORE_INDEX,
    generate_sample,
    write_seeded_splits,  # noqa: E402
)
from pixelwise.training.planner import parse_budget  # noqa: E402

SETS = ("isbi", "synthetic256", "synthetic1280", "camvid")
DEFAULT_SETS = "isbi,synthetic256,synthetic1280"
# The split scored after training; CamVid's test frames are not in the shared folder, so its val.
HELD_OUT = {"camvid": "val"}
ISBI_SPLITS = {"train": range(0, 20), "val": range(20, 25), "test": range(25, 30)}
DONE = "prepared.json"  # written last into a finished data folder: its contents and how long it took


def finish(tmp: Path, root: Path, info: dict) -> Path:
    """Write ``info`` as DONE into ``tmp`` and rename it to ``root`` (replacing an unfinished one)."""
    (tmp / DONE).write_text(json.dumps(info, indent=2))
    if root.exists():
        shutil.rmtree(root)
    os.rename(tmp, root)
    return root


def prepared(root: Path) -> dict | None:
    """The DONE record of a finished data folder, None when it is absent or unfinished."""
    path = root / DONE
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_isbi(src: Path, root: Path) -> dict:
    """ISBI slices in the pixelwise folder layout: masks 1 = membrane, 0 = interior; train/val/test by depth."""
    if (info := prepared(root)) is not None:
        return info
    if not (src / "images" / "slice00.png").is_file():
        raise SystemExit(f"--isbi {src}: no images/slice00.png there; give the isbi_membranes folder")
    start, tmp = time.perf_counter(), root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("images", "masks", "splits"):
        (tmp / sub).mkdir(parents=True)
    for split, slices in ISBI_SPLITS.items():
        stems = [f"slice{i:02d}" for i in slices]
        for stem in stems:
            shutil.copyfile(src / "images" / f"{stem}.png", tmp / "images" / f"{stem}.png")
            shipped = np.asarray(Image.open(src / "masks" / f"{stem}.png").convert("L"))
            Image.fromarray((shipped < 128).astype(np.uint8), "L").save(tmp / "masks" / f"{stem}.png")
        (tmp / "splits" / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
    classes = {"names": ["interior", "membrane"], "colors": [[0, 0, 0], [255, 64, 64]], "ignore_index": 255}
    (tmp / "classes.yaml").write_text(yaml.safe_dump(classes, sort_keys=False))
    info = {
        "set": "isbi",
        "source": str(src.resolve()),
        "splits": {k: [v.start, v.stop - 1] for k, v in ISBI_SPLITS.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    finish(tmp, root, info)
    return info


def render(job: tuple) -> None:
    """One demo scene at ``size`` px, cut to ``height`` rows, written as images/STEM.png and masks/STEM.png."""
    folder, stem, seed, index, size, height = job
    image, mask = generate_sample(np.random.default_rng([seed, index]), size)
    Image.fromarray(image[:height], "RGB").save(Path(folder) / "images" / f"{stem}.png", compress_level=1)
    Image.fromarray(mask[:height], "L").save(Path(folder) / "masks" / f"{stem}.png", compress_level=1)


def prepare_synthetic(root: Path, size: int, height: int, images: int, test_images: int, seed: int, jobs: int) -> dict:
    """The demo's scenes at ``size`` px (top ``height`` rows): train/val as the demo splits its first
    ``images`` scenes, the next ``test_images`` scenes as the test split."""
    if (info := prepared(root)) is not None:
        return info
    start, tmp = time.perf_counter(), root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("images", "masks", "splits"):
        (tmp / sub).mkdir(parents=True)
    stems = [f"demo_{i:04d}" for i in range(images + test_images)]
    work = [(str(tmp), stem, seed, i, size, height) for i, stem in enumerate(stems)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(render, work, chunksize=4))
    else:
        for job in work:
            render(job)
    write_seeded_splits(tmp, stems[:images], seed, 0.2)
    (tmp / "splits" / "test.txt").write_text("".join(s + "\n" for s in stems[images:]))
    classes = {"names": list(DEMO_CLASSES), "colors": [list(c) for c in DEMO_COLORS], "ignore_index": IGNORE_INDEX}
    (tmp / "classes.yaml").write_text(yaml.safe_dump(classes, sort_keys=False))
    info = {
        "set": f"synthetic{size}",
        "image_size": [size, height],
        "images": images,
        "test_images": test_images,
        "data_seed": seed,
        "jobs": jobs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    finish(tmp, root, info)
    return info


def prepare(name: str, args: argparse.Namespace) -> tuple[Path, dict, list[str]]:
    """The data folder of set ``name`` (written under --out/data unless already there), its DONE record,
    and the options ``pixelwise train`` needs to read it."""
    base = Path(args.out) / "data"
    base.mkdir(parents=True, exist_ok=True)
    if name == "camvid":  # read in place; its classes (void = 11 ignored) from a file beside the runs
        classes = base / "camvid-classes.yaml"
        classes.write_text(json.dumps({"names": NAMES, "colors": COLORS, "ignore_index": VOID}))
        return (
            Path(args.camvid),
            {"set": "camvid", "source": str(Path(args.camvid).resolve())},
            [
                "--classes-file",
                str(classes),
            ],
        )
    root = base / ("isbi" if name == "isbi" else f"{name}-n{args.images}+{args.test_images}-seed{args.data_seed}")
    reused = prepared(root) is not None
    if name == "isbi":
        info = prepare_isbi(Path(args.isbi), root)
    else:
        size, height = (256, 256) if name == "synthetic256" else (1280, 960)
        info = prepare_synthetic(root, size, height, args.images, args.test_images, args.data_seed, args.jobs)
    print(f"{name}: data {root} ({'reused, ' if reused else ''}written in {info['seconds']} s)", flush=True)
    return root, info, []


def run_set(name: str, args: argparse.Namespace) -> dict:
    """Train set ``name`` with the budget, evaluate its held-out split; the plan and the scores."""
    data, info, read_args = prepare(name, args)
    run = Path(args.out) / "runs" / f"{name}-{args.budget}-seed{args.seed}"
    wall = train_budget(data, run, args.budget, args.seed, args.device, [*read_args, *shlex.split(args.train_args)])
    split = HELD_OUT.get(name, "test")
    scores = evaluate_split(run, data, split, args.device, shlex.split(args.eval_args))
    plan_file = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else {}
    names = list(scores["per_class_iou"])
    return {
        "set": name,
        "held_out_split": split,
        "data": str(data),
        "data_info": info,
        "seed": args.seed,
        "budget": args.budget,
        "train_args": args.train_args,
        "wall_seconds": wall,
        "plan": plan_summary(run),
        "reasons": {k: plan_file.get("reasons", {}).get(k) for k in ("arch", "crop_size", "max_side", "epochs")},
        "median_hw": plan_file.get("fingerprint", {}).get("median_hw"),
        # The object class of a binary set (class 1): its Dice and IoU are what the literature reports.
        "object_dice": scores["per_class_dice"].get(names[1]) if len(names) == 2 else None,
        **scores,
        "run": str(run),
    }


def print_set(r: dict) -> None:
    """The plan and the held-out scores of one set (scores in %)."""
    p = r["plan"]
    lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f} ms/image"
    print(
        f"\n== {r['set']} (median image {r['median_hw']} HxW), budget {r['budget']}, seed {r['seed']}, scored on {r['held_out_split']}"
    )
    print(
        f"plan: {p.get('arch')}/{p.get('encoder')}, crop {p.get('crop_size')}, max_side {p.get('max_side')}, "
        f"epochs {p.get('epochs_done')} done of {p.get('epochs')} (~{p.get('planned_steps')} steps planned), "
        f"loss {p.get('loss')}, class weights {p.get('class_weights')}, plan latency {p.get('latency') or '-'}"
    )
    for k, why in r["reasons"].items():
        if why:
            print(f"  why {k}: {why}")
    print(
        f"{r['held_out_split']}: mIoU {pct(r['miou'])} %, mean Dice {pct(r['mean_dice'])} %, object Dice {pct(r['object_dice'])} %, "
        f"boundary IoU {pct(r.get('boundary_iou'))} %, latency {lat}; train+plan wall {r['wall_seconds']} s"
    )
    print("per-class IoU %: " + ", ".join(f"{n} {pct(v)}" for n, v in r["per_class_iou"].items()))


def print_table(results: list[dict]) -> None:
    """One line per set: plan and held-out scores side by side."""
    print(
        f"\n{'set':<14} {'arch/encoder':<24} {'crop':>5} {'side':>5} {'ep':>4} {'mIoU':>6} {'objDice':>7} {'bIoU':>6}"
    )
    for r in results:
        p = r["plan"]
        model = f"{p.get('arch')}/{p.get('encoder')}"
        print(
            f"{r['set']:<14} {model[:24]:<24} {p.get('crop_size')!s:>5} {p.get('max_side')!s:>5} "
            f"{p.get('epochs_done')!s:>4} {pct(r['miou']):>6} {pct(r['object_dice']):>7} {pct(r.get('boundary_iou')):>6}"
        )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sets", default=DEFAULT_SETS, help=f"comma-separated, from {', '.join(SETS)} (default {DEFAULT_SETS})"
    )
    p.add_argument("--budget", default="20m", help="the --budget of every training run (default 20m)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic scenes (default 0, the demo's)")
    p.add_argument("--images", type=int, default=300, help="synthetic train+val scenes (default 300, the demo's)")
    p.add_argument("--test-images", type=int, default=100, help="synthetic held-out test scenes (default 100)")
    p.add_argument("--isbi", default="../shared/data/isbi_membranes", help="the isbi_membranes folder")
    p.add_argument("--camvid", default="../shared/data/camvid", help="the camvid folder (set camvid, read in place)")
    p.add_argument("--out", default="/tmp/pixelwise-planner-datasets", help="data, runs and results go here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes rendering synthetic scenes")
    p.add_argument("--train-args", default="", help='extra options of `pixelwise train`, e.g. "--no-amp"')
    p.add_argument("--eval-args", default="", help='extra options of `pixelwise evaluate`, e.g. "--backend torch"')
    p.add_argument("--prepare-only", action="store_true", help="write the data sets, train nothing")
    args = p.parse_args(glue_option_values(sys.argv[1:], ("--train-args", "--eval-args")))
    args.set_list = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(args.set_list) - set(SETS))
    if unknown or not args.set_list:
        p.error(f"--sets: unknown or no set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    if args.images < 2 or args.test_images < 1:
        p.error("--images must be at least 2 (train and val) and --test-images at least 1")
    parse_budget(args.budget)  # a bad budget stops here, before any data is written
    return args


def main() -> None:
    args = parse_args()
    if args.prepare_only:
        for name in args.set_list:
            prepare(name, args)
        return
    results, failed = [], []
    for name in args.set_list:
        try:
            results.append(run_set(name, args))
        except subprocess.CalledProcessError as e:  # one set failing does not lose the others
            failed.append({"set": name, "error": f"exit status {e.returncode}: {shlex.join(e.cmd)}"})
            print(f"{name}: FAILED, {failed[-1]['error']}", flush=True)
            continue
        print_set(results[-1])
    path = Path(args.out) / f"results-{args.budget}-seed{args.seed}.json"
    report = {"budget": args.budget, "seed": args.seed, "train_args": args.train_args, "cpus": os.cpu_count()}
    path.write_text(json.dumps({**report, "results": results, "failed": failed}, indent=2))
    print_table(results)
    for f in failed:
        print(f"{f['set']}: FAILED ({f['error']})")
    print(f"results: {path}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
