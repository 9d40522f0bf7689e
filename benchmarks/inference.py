"""Inference benchmark: speed, memory of a huge tiled image, post-processing and uncertainty quality.

    python benchmarks/inference.py                      # everything; trains a demo model first
    python benchmarks/inference.py --run runs/demo-...  # use a trained demo run (its data/ folder is used)

Speed (same machine, same process, the paths called in turn, round after round): the default model (unet/resnet18, the
TrainConfig defaults, 5 classes, seeded random weights) at one resolution (480x360 by
default), three ways, each producing the same class-index mask:

  eager       model(x) in a loop as a user would write it: torch.no_grad(), the HWC uint8 batch
              permuted to NCHW and converted to float, normalisation and argmax in PyTorch. The
              permuted tensor keeps channels-last strides, which PyTorch carries through the
              network; that is the faster eager variant here, and the one the ratios divide by
  eager-nchw  the same with a contiguous NCHW input (what torchvision's ToTensor returns)
  segmenter   pixelwise.load(run).predict / predict_batch (backend auto)
  seg-torch   the Segmenter forced onto PyTorch (channels-last, inference mode)
  onnxruntime the Segmenter on the ONNX file written by `pixelwise export`
  seg-bf16    the Segmenter with precision="bf16" (PyTorch bfloat16 autocast; not the same output:
              its probability difference and label agreement are printed next to it); only on
              CPUs with native bf16, elsewhere it is emulated and about 10x slower than float32

Memory: one SIZE x SIZE image (8000 by default) predicted with the default inference settings
(tiled automatically) in a child process; its peak resident memory is read from the OS.

Quality (no timing): on the demo validation split, mIoU without and with each post-processing
step; tiled versus whole-image agreement; test-time augmentation; and how errors concentrate on
the least-confident pixels (max probability, entropy, MC-dropout variance when the model has
dropout).

It prints tables and ratios, not verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


# -- speed ----------------------------------------------------------------------------------------


def _timed_interleaved(fns: dict, iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in rounds that call every function once.

    On a machine whose speed drifts (a shared or throttled CPU) this spreads the drift over all
    paths alike, where timing one path after the other would hand it to whichever ran last.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def speed(workdir: Path, size: tuple[int, int], iters: int, warmup: int, batch: int) -> list[dict]:
    from pixelwise.bundle import Bundle, Normalization, load_bundle, save_bundle
    from pixelwise.classes import ClassInfo, default_palette
    from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from pixelwise.export import export_model
    from pixelwise.models import ModelConfig, build_model
    from pixelwise.predict.predictor import load
    from pixelwise.training.config import TrainConfig

    defaults = TrainConfig()
    run = workdir / "speed-model"
    if not (run / "model.json").is_file():
        torch.manual_seed(0)
        model = build_model(
            ModelConfig(arch=defaults.arch, encoder=defaults.encoder, num_classes=5, kwargs=dict(defaults.model_kwargs))
        )
        names = ["background", "disc", "square", "triangle", "ring"]
        bundle = Bundle(model.config, ClassInfo(names, default_palette(5)), Normalization(IMAGENET_MEAN, IMAGENET_STD))
        save_bundle(run, model, bundle)
    export_model(run, "onnx")

    w, h = size
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]

    # 1. what a user writes
    model, bundle = load_bundle(run, "cpu")
    mean = torch.tensor(bundle.normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.normalization.std).view(1, 3, 1, 1)

    def eager(images, contiguous=False):
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        if contiguous:
            x = x.contiguous()
        with torch.no_grad():
            logits = model((x - mean) / std)
        return logits.argmax(1).numpy()

    ref_labels = eager([img])
    with torch.no_grad():
        x = torch.from_numpy(img[None]).permute(0, 3, 1, 2).float() / 255.0
        ref_probs = torch.softmax(model((x - mean) / std), 1)[0].numpy()
    paths = {
        "eager": None,
        "eager-nchw": None,
        "segmenter": load(run, "cpu", "auto"),
        "seg-torch": load(run, "cpu", "torch"),
        "onnxruntime": load(run, "cpu", "onnxruntime"),
    }
    from pixelwise.devices import cpu_supports_bf16

    if cpu_supports_bf16():
        paths["seg-bf16"] = load(run, "cpu", "torch", precision="bf16")
    ones, manys, outputs = {}, {}, {}
    for name, seg in paths.items():
        if seg is None:
            nchw = name == "eager-nchw"
            ones[name] = lambda nchw=nchw: eager([img], nchw)  # noqa: E731
            manys[name] = lambda nchw=nchw: eager(imgs, nchw)  # noqa: E731
            outputs[name] = (ref_probs, ref_labels[0])
        else:
            ones[name] = lambda seg=seg: seg.predict(img)  # noqa: E731
            manys[name] = lambda seg=seg: seg.predict_batch(imgs)  # noqa: E731
            outputs[name] = (seg.predict_proba(img), seg.predict(img))
    lat = _timed_interleaved(ones, iters, warmup)
    thr = _timed_interleaved(manys, max(5, iters // 2), 1)
    rows = []
    for name, seg in paths.items():
        probs, labels = outputs[name]
        rows.append(
            {
                "path": name,
                "backend": (
                    "torch bf16"
                    if getattr(seg, "precision", "") == "bf16"
                    else getattr(seg, "active_backend", "torch eager")
                ),
                "latency_ms": 1000 * statistics.median(lat[name]),
                "images_per_s": batch / statistics.median(thr[name]),
                "max_abs_prob_diff": float(np.abs(probs - ref_probs).max()),
                "label_agreement": float((labels == ref_labels[0]).mean()),
            }
        )
    base = rows[0]
    for r in rows:
        r["latency_x"] = base["latency_ms"] / r["latency_ms"]
        r["throughput_x"] = r["images_per_s"] / base["images_per_s"]
    return rows


# -- memory ---------------------------------------------------------------------------------------


def big_child(run: str, side: int, threads: int) -> None:
    """Runs in the child: predict one side x side image with the default settings, print JSON."""
    from pixelwise.predict.predictor import load

    if threads:
        torch.set_num_threads(threads)
    seg = load(run, "cpu", "auto")
    tile = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    reps = -(-side // 256)
    img = np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[:side, :side])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    pred = seg.predict_full(img)
    labels = pred.labels
    seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "side": side,
                "tiles": pred.stats["tiles"],
                "tiled": pred.stats["tiled"],
                "max_batch": pred.stats["max_batch"],
                "seconds": seconds,
                "labels": list(labels.shape),
                "rss_before_predict_mb": before / 1024,
                "backend": seg.active_backend,
            }
        )
    )


def memory(run: Path, side: int, threads: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child-big", str(run), str(side), str(threads)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    c = 5
    res["output_buffers_mb"] = (c * side * side * 4 + side * side * 4) / 2**20
    return res


# -- quality --------------------------------------------------------------------------------------


def train_demo_model(workdir: Path, images: int, epochs: int | None) -> Path:
    from pixelwise.data.synthetic import make_demo_dataset
    from pixelwise.demo import DEMO_TRAIN
    from pixelwise.training.trainer import TrainConfig, train

    run = workdir / "quality-run"
    if (run / "model.json").is_file():
        return run
    data = workdir / "quality-run-data"
    if not (data / "classes.yaml").is_file():
        make_demo_dataset(data, num_images=images, seed=0)
    cfg = dict(DEMO_TRAIN, dropout=0.1)
    if epochs:
        cfg["epochs"] = epochs
    train(TrainConfig(data=str(data), out=str(run), **cfg), overwrite=True, progress=True)
    (run / "data-path.txt").write_text(str(data))
    return run


def _data_of(run: Path, data: str | None) -> Path:
    """The demo data of a run: --data, else RUN/data (where `pixelwise demo` puts it), else the recorded path."""
    if data:
        return Path(data)
    if (run / "data" / "images").is_dir():
        return run / "data"
    recorded = run / "data-path.txt"
    if recorded.is_file() and (Path(recorded.read_text().strip()) / "images").is_dir():
        return Path(recorded.read_text().strip())
    raise SystemExit(f"no demo data found for {run}; pass --data DIR")


def quality(run: Path, data: Path, max_images: int) -> dict:
    from pixelwise.data import find_samples, read_image, read_mask, split_samples
    from pixelwise.metrics import ConfusionMatrix
    from pixelwise.postprocess import PostprocessConfig, crf_backend_name, postprocess
    from pixelwise.predict.engine import InferenceConfig, error_rate_by_confidence
    from pixelwise.predict.predictor import load

    seg = load(run, "cpu", "auto")
    tcfg = seg.bundle.train_config
    samples = split_samples(
        data, find_samples(data), tcfg.get("val_fraction", 0.2), tcfg.get("test_fraction", 0.0), tcfg.get("seed", 0)
    )["val"][:max_images]
    n, ignore = seg.num_classes, seg.classes.ignore_index
    post = {
        "none": PostprocessConfig(),
        "min_size=64": PostprocessConfig(min_size=64),
        "fill_holes=64": PostprocessConfig(fill_holes=64),
        "crf": PostprocessConfig(crf=True),
        "crf(torch)": PostprocessConfig(crf=True, crf_backend="torch"),
        "min_size+fill_holes+crf": PostprocessConfig(min_size=64, fill_holes=64, crf=True),
    }
    infer = {
        "hflip": InferenceConfig(hflip=True),
        "hflip+scales 0.75,1,1.25": InferenceConfig(hflip=True, scales=(0.75, 1.0, 1.25)),
        "tiled 128, overlap 0.25": InferenceConfig(tile="always", tile_size=128, tile_overlap=0.25),
    }
    cms = {k: ConfusionMatrix(n, ignore) for k in list(post) + list(infer)}
    agree_tiled = []
    conf_all, ent_all, var_all, ok_all = [], [], [], []
    has_dropout = seg.torch_member.has_dropout
    for s in samples:
        img, gt = read_image(s.image), read_mask(s.mask)
        pred = seg.predict_full(img)
        for k, pc in post.items():
            labels = postprocess(pred.probs, img, pc) if pc.active else pred.labels
            cms[k].update(labels, gt)
        for k, ic in infer.items():
            p2 = seg.predict_full(img, ic)
            cms[k].update(p2.labels, gt)
            if k.startswith("tiled"):
                agree_tiled.append(float((p2.labels == pred.labels).mean()))
        valid = gt != ignore
        ok_all.append((pred.labels == gt)[valid])
        conf_all.append(pred.confidence[valid])
        ent_all.append(pred.entropy[valid])
        if has_dropout:
            mc = seg.predict_full(img, InferenceConfig(mc_dropout=8))
            var_all.append(mc.variance[valid])
    ok = np.concatenate(ok_all)
    out = {
        "images": len(samples),
        "crf_backend": crf_backend_name(PostprocessConfig(crf=True)),
        "miou": {k: cm.compute()["miou"] for k, cm in cms.items()},
        "tiled_label_agreement": float(np.mean(agree_tiled)),
        "uncertainty": {
            "max probability": error_rate_by_confidence(np.concatenate(conf_all), ok, 0.1),
            "entropy": error_rate_by_confidence(-np.concatenate(ent_all), ok, 0.1),
        },
    }
    if var_all:
        out["uncertainty"]["MC-dropout variance (8 passes)"] = error_rate_by_confidence(
            -np.concatenate(var_all), ok, 0.1
        )
    return out


# -- printing -------------------------------------------------------------------------------------


def print_speed(rows: list[dict], size, batch: int) -> None:
    threads = torch.get_num_threads()
    print(f"\n== speed: {size[0]}x{size[1]}, unet/resnet18 (TrainConfig defaults), {threads} threads ==")
    print(
        f"{'path':<12} {'runs on':<12} {'latency ms':>10} {'images/s':>9} {'x eager lat':>11} {'x eager img/s':>13} "
        f"{'max|dp|':>9} {'labels=':>8}"
    )
    for r in rows:
        print(
            f"{r['path']:<12} {r['backend']:<12} {r['latency_ms']:>10.1f} {r['images_per_s']:>9.2f} "
            f"{r['latency_x']:>11.2f} {r['throughput_x']:>13.2f} {r['max_abs_prob_diff']:>9.2e} "
            f"{100 * r['label_agreement']:>7.3f}%"
        )
    print(f"(latency: batch 1, median; images/s: predict_batch of {batch})")


def print_memory(m: dict) -> None:
    s = m["side"]
    print(f"\n== memory: one {s}x{s} image, default settings ({m['backend']}) ==")
    print(f"tiled={m['tiled']} tiles={m['tiles']} largest batch={m['max_batch']} time={m['seconds']:.1f}s")
    print(
        f"peak RSS {m['peak_rss_mb']:.0f} MB (before predicting: {m['rss_before_predict_mb']:.0f} MB; "
        f"probability + weight buffers alone: {m['output_buffers_mb']:.0f} MB)"
    )


def print_quality(q: dict) -> None:
    print(f"\n== quality: demo validation split, {q['images']} images ==")
    base = q["miou"]["none"]
    print(f"{'variant':<28} {'mIoU':>7} {'delta':>7}")
    for k, v in q["miou"].items():
        if k == "crf" and q["crf_backend"] == "torch":
            continue  # without pydensecrf the default CRF is the torch one, the next row
        label = f"crf({q['crf_backend']})" if k == "crf" else k
        print(f"{label:<28} {100 * v:>7.2f} {100 * (v - base):>+7.2f}")
    print(f"tiled (128 px tiles) vs whole-image labels agree on {100 * q['tiled_label_agreement']:.2f}% of pixels")
    print("\nerrors among the least-certain 10% of pixels vs the other 90%:")
    print(f"{'ranked by':<32} {'error low10%':>12} {'error rest':>10} {'ratio':>7} {'errors in low10%':>16}")
    for k, r in q["uncertainty"].items():
        print(
            f"{k:<32} {100 * r['low_error']:>11.2f}% {100 * r['rest_error']:>9.2f}% {r['ratio']:>7.1f} "
            f"{100 * r['errors_in_low']:>15.1f}%"
        )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child-big":
        big_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="trained demo run for the quality part (default: train one)")
    ap.add_argument("--data", default=None, help="its data folder (default RUN/data)")
    ap.add_argument("--workdir", default=None, help="where models and data go (default: a temporary folder)")
    ap.add_argument("--size", type=_parse_size, default=(480, 360), help="WxH for the speed part (default 480x360)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--big", type=int, default=8000, help="side of the memory test image (default 8000)")
    ap.add_argument("--demo-images", type=int, default=300)
    ap.add_argument("--demo-epochs", type=int, default=None, help="default: the demo's own epoch count")
    ap.add_argument("--val-images", type=int, default=60, help="cap on validation images scored")
    ap.add_argument("--skip", action="append", default=[], choices=["speed", "memory", "quality"])
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pixelwise-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"pixelwise inference benchmark; torch {torch.__version__}, {os.cpu_count()} CPUs, work dir {workdir}")
    results: dict = {}
    if "speed" not in args.skip:
        results["speed"] = speed(workdir, args.size, args.iters, args.warmup, args.batch)
        print_speed(results["speed"], args.size, args.batch)
    if "memory" not in args.skip:
        if not (workdir / "speed-model" / "model.json").is_file():
            speed(workdir, args.size, 1, 0, 1)  # writes the default model; these timings are not used
        results["memory"] = memory(workdir / "speed-model", args.big, args.threads)
        print_memory(results["memory"])
    if "quality" not in args.skip:
        run = Path(args.run) if args.run else train_demo_model(workdir, args.demo_images, args.demo_epochs)
        results["quality"] = quality(run, _data_of(run, args.data), args.val_images)
        print_quality(results["quality"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
