"""Training-step speed of the demo U-Net on this CPU: encoder, batch size, float32 vs bf16, NCHW vs channels_last.

    python benchmarks/train_step.py [--encoders resnet18,tu-resnet10t] [--batches 8,16] [--crop 128]
                                    [--rounds 6] [--bf16 auto|yes|no]

Each setting runs the step pixelwise trains with (``pixelwise.training.step``, built from the
default TrainConfig as the Trainer builds it: the real loss, AdamW, gradient clipping) on random
inputs (speed does not depend on pixel values) with the demo's decoder. Every setting keeps its
own model and optimiser; the settings take one step each in turn, round after round, so a
machine whose speed drifts slows all of them alike. The first round is warm-up; the median of
the rest is reported, as training images per second. bf16 autocast is measured only on CPUs with
native bf16 unless ``--bf16 yes`` (emulated bf16 is about 10-20x slower than float32).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from pixelwise.demo import DEMO_TRAIN
from pixelwise.devices import cpu_supports_bf16
from pixelwise.models import ModelConfig, build_model
from pixelwise.training.config import TrainConfig
from pixelwise.training.step import build_criterion, build_train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", default="resnet18,tu-resnet10t")
    p.add_argument("--batches", default="8,16")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto")
    args = p.parse_args()
    bf16 = cpu_supports_bf16() if args.bf16 == "auto" else args.bf16 == "yes"
    config = TrainConfig(lr=1e-3, amp=False)
    cpu = torch.device("cpu")
    crit = build_criterion(config, None, 255, cpu)  # no class weights: no pixel counts needed
    settings = []
    for enc, batch, dtype, cl in itertools.product(
        args.encoders.split(","),
        [int(b) for b in args.batches.split(",")],
        [None, torch.bfloat16] if bf16 else [None],
        (False, True),
    ):
        torch.manual_seed(0)
        model = build_model(ModelConfig(DEMO_TRAIN["arch"], enc, 5, kwargs=dict(DEMO_TRAIN["model_kwargs"])))
        fmt = torch.channels_last if cl else torch.contiguous_format
        step = build_train_step(model.to(memory_format=fmt), crit, config, cpu, channels_last=cl)
        step.amp_dtype = dtype  # set here rather than by amp_dtype_for, so --bf16 yes can force emulated bf16
        settings.append(
            {
                "name": f"{enc} batch {batch} {'bf16' if dtype else 'float32'} {'channels_last' if cl else 'NCHW'}",
                "step": step,
                "x": torch.randn(batch, 3, args.crop, args.crop).contiguous(memory_format=fmt),
                "y": torch.randint(0, 5, (batch, args.crop, args.crop)),
                "times": [],
            }
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_supports_bf16()}, "
        f"{args.crop}x{args.crop} crops, {args.rounds} rounds (first = warm-up), grad clip {config.grad_clip:g}"
    )
    for _ in range(args.rounds):
        for s in settings:
            t = time.perf_counter()
            float(s["step"](s["x"], s["y"]))  # the loop reads every step's loss
            s["times"].append(time.perf_counter() - t)
    print(f"{'setting':<48} {'images/s':>9}")
    for s in settings:
        print(f"{s['name']:<48} {s['x'].shape[0] / statistics.median(s['times'][1:]):>9.1f}")


if __name__ == "__main__":
    main()
