"""Training-step speed of the demo model on this CPU: float32 vs bf16 autocast, NCHW vs channels_last.

    python benchmarks/train_step.py [--batch 8] [--crop 128] [--steps 10]

Random inputs (speed does not depend on pixel values), the real loss and AdamW; the first two
steps of each setting are warm-up and not counted; the best of the rest is reported.
"""

from __future__ import annotations

import argparse
import time

import torch

from pixelwise.demo import DEMO_TRAIN
from pixelwise.losses import build_loss
from pixelwise.models import ModelConfig, build_model
from pixelwise.trainer import cpu_supports_bf16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.crop, args.crop)
    y = torch.randint(0, 5, (args.batch, args.crop, args.crop))
    crit = build_loss("ce+dice", ignore_index=255)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_supports_bf16()}")
    print(f"{'setting':<22} {'images/s':>9}")
    for dtype in (None, torch.bfloat16):
        for channels_last in (False, True):
            model = build_model(ModelConfig(DEMO_TRAIN["arch"], DEMO_TRAIN["encoder"], 5,
                                            kwargs=dict(DEMO_TRAIN["model_kwargs"])))
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            xx = x.contiguous(memory_format=fmt)
            opt = torch.optim.AdamW(model.parameters(), 1e-3)
            times = []
            for _ in range(args.steps):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    out = model(xx)
                loss = crit(out.float(), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
            name = f"{'bf16' if dtype else 'float32'} {'channels_last' if channels_last else 'NCHW'}"
            print(f"{name:<22} {args.batch / min(times[2:]):>9.1f}", flush=True)


if __name__ == "__main__":
    main()
