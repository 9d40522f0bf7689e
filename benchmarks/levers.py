"""Levers on CamVid: the same budget, each lever added to ``pixelwise train --budget B`` over several seeds.

Each lever is a name and the extra options of ``pixelwise train`` it adds (``base`` adds none);
every lever runs once per seed, one run after the other, as recipe (a) of camvid_budget.py:
trained with the budget, scored by ``pixelwise evaluate RUN DATA --split val`` (mIoU, per-class
IoU, boundary IoU and latency when evaluate reports them). ``--common-args`` go to every run
(e.g. ``--no-amp`` for float32). Printed: one line per run, then per lever the mean / min / max /
range over the seeds of val mIoU, boundary IoU, latency and the thin classes' IoU, and the mean
difference from ``base`` (the first lever when there is no ``base``). Everything goes to
``--out``/levers-BUDGET.json; finished runs are listed there as they end.

Commands (a quiet machine, nothing else running; each lever costs seeds x (budget + ~1 min)):

    # the default levers (base, ohem, ce+lovasz, boundary weight 1, EMA 0.999, class crops 0.5), 3 seeds,
    # 20 minutes, float32: 6 levers x 3 seeds x 21 min = about 6 h 20 min
    python benchmarks/levers.py --budget 20m --seeds 0,1,2 --common-args "--no-amp" --out /tmp/levers20
    # two levers only: about 2 h 10 min
    python benchmarks/levers.py --budget 20m --seeds 0,1,2 --common-args "--no-amp" \\
        --levers "base=;ohem=--loss ohem" --out /tmp/levers20ohem
    # architectures the planner may not pick by itself: about 3 h 10 min
    python benchmarks/levers.py --budget 20m --seeds 0,1,2 --common-args "--no-amp" \\
        --levers "base=;fpn=--arch fpn;segformer=--arch segformer" --out /tmp/levers20arch
    # BiSeNet V2 (built in, from scratch) on its own: about 21 min a seed
    python benchmarks/levers.py --budget 20m --seeds 0 --common-args "--no-amp" \\
        --levers "bisenet=--arch bisenetv2" --out /tmp/levers20bise
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from camvid_budget import (  # noqa: E402
    COLORS,
    NAMES,
    VOID,
    glue_option_values,
    parse_budget,
    pct,
    plan_text,
    run_pixelwise,
    spread,
)

DEFAULT_LEVERS = (
    "base=;ohem=--loss ohem;lovasz=--loss ce+lovasz;boundary=--boundary-weight 1;ema=--ema 0.999;"
    "class-crops=--class-crops 0.5"
)
THIN = ("pole", "fence", "bicyclist", "sign_symbol", "pedestrian")


def parse_levers(text: str) -> dict[str, str]:
    """'base=;ohem=--loss ohem' -> {"base": "", "ohem": "--loss ohem"}."""
    levers = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, options = part.partition("=")
        if not sep or not name.strip() or name.strip() in levers:
            raise SystemExit(f"--levers: '{part}' is not NAME=OPTIONS with a new name; e.g. \"base=;ohem=--loss ohem\"")
        levers[name.strip()] = options.strip()
    if not levers:
        raise SystemExit('--levers: no lever given; e.g. "base=;ohem=--loss ohem"')
    return levers


def run_lever(name: str, options: str, seed: int, args: argparse.Namespace, classes_file: Path) -> dict:
    """Recipe (a) with the common options and this lever's, into --out/NAME/."""
    run_args = argparse.Namespace(
        budget=args.budget,
        device=args.device,
        train_args=f"{args.common_args} {options}".strip(),
        eval_args=args.eval_args,
    )
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    return {"lever": name, "options": options, **run_pixelwise(Path(args.data), out, run_args, classes_file, seed)}


def lever_summary(results: list[dict]) -> dict:
    """Per lever: spread over seeds of mIoU, boundary IoU, latency and the thin classes; mean mIoU gain over
    the baseline (``base``, else the first lever)."""
    levers = list(dict.fromkeys(r["lever"] for r in results))
    base = "base" if "base" in levers else levers[0] if levers else None
    out = {}
    for name in levers:
        runs = [r for r in results if r["lever"] == name]
        out[name] = {
            "options": runs[0]["options"],
            "seeds": [r["seed"] for r in runs],
            "miou": spread([r["miou"] for r in runs]),
            "boundary_iou": spread([r.get("boundary_iou") for r in runs]),
            "latency_ms": spread([r.get("latency_ms") for r in runs]),
            "thin_iou": {c: spread([r["per_class_iou"].get(c) for r in runs]) for c in THIN},
        }
    for s in out.values():
        b = out[base]["miou"]
        s["baseline"] = base
        s["miou_gain"] = None if not (s["miou"] and b) else s["miou"]["mean"] - b["mean"]
    return out


def print_levers(results: list[dict], summary: dict) -> None:
    """One line per run, then one line per lever over its seeds (IoU in %)."""
    print(f"\n{'lever':<12} {'seed':>4} {'wall s':>7} {'mIoU':>6} {'bIoU':>6} {'ms/img':>7}  plan")
    for r in results:
        lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
        print(
            f"{r['lever'][:12]:<12} {r['seed']:>4} {r['wall_seconds']:>7} {pct(r['miou']):>6} "
            f"{pct(r.get('boundary_iou')):>6} {lat:>7}  {plan_text(r.get('plan'))}"
        )
    thin = " ".join(f"{c[:7]:>7}" for c in THIN)
    print(
        f"\n{'lever':<12} {'n':>2} {'mIoU mean':>9} {'min':>6} {'max':>6} {'range':>6} {'gain':>6} {'bIoU':>6} {thin}"
    )
    for name, s in summary.items():
        m, gain = s["miou"], s["miou_gain"]
        cells = " ".join(f"{pct((s['thin_iou'][c] or {}).get('mean')):>7}" for c in THIN)
        print(
            f"{name[:12]:<12} {m['n']:>2} {pct(m['mean']):>9} {pct(m['min']):>6} {pct(m['max']):>6} "
            f"{pct(m['range']):>6} {pct(gain):>6} {pct((s['boundary_iou'] or {}).get('mean')):>6} {cells}"
        )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/camvid")
    p.add_argument("--budget", default="20m")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--levers", default=DEFAULT_LEVERS, help=f'NAME=OPTIONS;... (default "{DEFAULT_LEVERS}")')
    p.add_argument("--common-args", default="", help='options of `pixelwise train` for every run, e.g. "--no-amp"')
    p.add_argument("--eval-args", default="", help='extra options of `pixelwise evaluate`, e.g. "--backend torch"')
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/levers")
    args = p.parse_args(glue_option_values(sys.argv[1:], ("--common-args", "--eval-args", "--levers")))
    try:
        args.seed_list = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers such as 0,1,2, got {args.seeds!r}")
    args.lever_map = parse_levers(args.levers)
    parse_budget(args.budget)  # a bad budget stops here, before anything runs
    return args


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes_file = out / "camvid-classes.yaml"
    classes_file.write_text(json.dumps({"names": NAMES, "colors": COLORS, "ignore_index": VOID}))
    path = out / f"levers-{args.budget}.json"
    results, failed = [], []
    for name, options in args.lever_map.items():
        for seed in args.seed_list:
            try:
                results.append(run_lever(name, options, seed, args, classes_file))
                print(f"{name} seed {seed}: val mIoU {pct(results[-1]['miou'])} %", flush=True)
            except subprocess.CalledProcessError as e:  # one run failing does not lose the others
                failed.append(
                    {"lever": name, "seed": seed, "error": f"exit status {e.returncode}: {shlex.join(e.cmd)}"}
                )
                print(f"{name} seed {seed}: FAILED, {failed[-1]['error']}", flush=True)
            report = {"budget": args.budget, "common_args": args.common_args, "cpus": os.cpu_count()}
            report.update(results=results, failed=failed, summary=lever_summary(results))
            path.write_text(json.dumps(report, indent=2))
    if results:
        print_levers(results, lever_summary(results))
    for f in failed:
        print(f"{f['lever']} seed {f['seed']}: FAILED ({f['error']})")
    print(f"results: {path}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
