"""Training under torchrun: two CPU processes (gloo) against one process, failures, restarts.

The multi-process tests launch ``python -m torch.distributed.run --standalone --nproc_per_node=2
-m pixelwise train ...`` on 11 synthetic 32x32 images (8 train, 3 validation).

Why equality with one process is expected here: the model has no BatchNorm (a U-Net on a timm
ResNet-18 encoder, three stages, GroupNorm, decoder without normalisation), so a process's half
batch is normalised exactly as in the full batch; the loss is plain cross-entropy on full 32x32
crops with no ignored pixel, so the mean over the two half batches of their per-pixel means is the
full batch's mean, and DDP's gradient average equals the one-process gradient up to float
rounding. With BatchNorm the per-process batch statistics would differ (``--sync-bn`` fixes that
on GPUs; PyTorch's SyncBatchNorm does not run on CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import pixelwise
from conftest import make_simple_dataset
from pixelwise.data import open_folder
from pixelwise.data.dataset import SegmentationDataset, pad_collate
from pixelwise.data.transforms import eval_transform
from pixelwise.errors import PixelwiseError
from pixelwise.losses import build_loss
from pixelwise.models import ModelConfig, build_model
from pixelwise.training import distributed, rundir, state, trainer
from pixelwise.training.config import TrainConfig
from pixelwise.training.distributed import DistContext, ShardSampler
from pixelwise.training.sampling import SeededSampler

NO_BATCHNORM_MODEL = {
    "arch": "unet",
    "encoder": "tu-resnet18",
    "model_kwargs": {
        "norm_layer": "groupnorm",
        "decoder_use_norm": False,
        "encoder_depth": 3,
        "decoder_channels": [16, 8, 8],
    },
}
OPTIONS = {
    "epochs": 2,
    "batch_size": 4,
    "crop_size": 32,
    "scale_range": (1.0, 1.0),
    "loss": "ce",
    "num_workers": 0,
    "device": "cpu",
    "lr": 1e-3,
    "seed": 5,
    "amp": False,
    **NO_BATCHNORM_MODEL,
}
# amp off: on CPUs with native bf16 the default would train in bf16, whose rounding depends on
# how a batch is split, so float32 is what makes one process and two comparable at 1e-5.


def cli_args(data, out) -> list[str]:
    m = NO_BATCHNORM_MODEL["model_kwargs"]
    return [
        str(data),
        "--out",
        str(out),
        "--arch",
        "unet",
        "--encoder",
        "tu-resnet18",
        "--model-kwargs",
        f"norm_layer={m['norm_layer']}",
        "--model-kwargs",
        "decoder_use_norm=false",
        "--model-kwargs",
        "encoder_depth=3",
        "--model-kwargs",
        "decoder_channels=[16,8,8]",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--crop-size",
        "32",
        "--scale-range",
        "1,1",
        "--loss",
        "ce",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--lr",
        "1e-3",
        "--seed",
        "5",
        "--no-amp",
        "--quiet",
    ]


def torchrun(args: list[str], *launcher: str, fail_at: str | None = None) -> subprocess.CompletedProcess:
    """Run ``pixelwise train ARGS`` in two gloo processes on this machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(distributed.FAIL_HOOK_ENV, None)
    if fail_at:
        env[distributed.FAIL_HOOK_ENV] = fail_at
    # --standalone: a private rendezvous on a free local port, so parallel test runs do not collide.
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *launcher,
        "-m",
        "pixelwise",
        "train",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_simple_dataset(tmp_path_factory.mktemp("dist") / "data", n=11, size=(32, 32), num_classes=3, seed=1)
    stems = [f"s{i:02d}" for i in range(11)]
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(stems[:8]) + "\n")
    # Three validation images over two processes: a padded shard would score one image twice.
    (root / "splits" / "val.txt").write_text("\n".join(stems[8:]) + "\n")
    return root


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    assert_ok(torchrun(cli_args(data, out)))
    return out


def tensors_close(a_path, b_path, atol: float) -> float:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= atol, f"largest difference {worst}"
    return worst


def test_two_processes_match_one_process(ddp_run, data, tmp_path):
    single = pixelwise.train(data=str(data), out=str(tmp_path / "single"), progress=False, **OPTIONS)
    # Same global batches, same augmentation, gradients averaged: weights and AdamW moments after
    # 4 optimizer steps agree up to float rounding (observed: a few 1e-7).
    tensors_close(ddp_run / "checkpoint.safetensors", single.run_dir / "checkpoint.safetensors", atol=1e-5)
    ddp_hist = json.loads((ddp_run / "checkpoint.json").read_text())["history"]
    for d, s in zip(ddp_hist, single.history, strict=True):
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-5)
        assert d["val_loss"] == pytest.approx(s["val_loss"], rel=1e-5)  # per-image mean: same in both
        assert d["val_miou"] == pytest.approx(s["val_miou"], abs=1e-3)

    # Rank 0 alone wrote the log; it states the global batch and the split.
    log = (ddp_run / "train.log").read_text().splitlines()
    assert sum(line.startswith("run ") for line in log) == 1
    assert sum(line.startswith("epoch ") for line in log) == 2
    assert (
        "distributed: 2 processes (gloo), global batch 4 = 2 x 2 per process, lr 0.001 for the global batch"
        in "\n".join(log)
    )
    meta = json.loads((ddp_run / "model.json").read_text())
    assert (meta["training"]["processes"], meta["training"]["batch_per_process"], meta["training"]["global_batch"]) == (
        2,
        2,
        4,
    )
    assert (ddp_run / "config.yaml").read_text().startswith("# pixelwise training configuration")


def test_validation_metrics_cover_the_split_once(ddp_run, data):
    """The all-reduced matrix of the sharded validation equals one process scoring the same model."""
    meta = json.loads((ddp_run / "model.json").read_text())
    logged = meta["metrics"]["val"]
    seg = pixelwise.load(ddp_run)
    ds = SegmentationDataset(open_folder(str(data), 0.2, 0.0, 5).splits["val"], eval_transform())
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=pad_collate(255))
    crit = build_loss("ce", ignore_index=255)
    _, cm = trainer.run_validation(seg.model, loader, crit, 3, 255, torch.device("cpu"), None, True)
    one = cm.compute()
    assert [c["gt_pixels"] for c in logged["per_class"]] == [c["gt_pixels"] for c in one["per_class"]]
    assert [c["pred_pixels"] for c in logged["per_class"]] == [c["pred_pixels"] for c in one["per_class"]]
    assert logged["miou"] == one["miou"] and logged["pixel_accuracy"] == one["pixel_accuracy"]
    # Independent count of the ground truth: every validation pixel exactly once (3 x 32 x 32).
    masks = [np.asarray(Image.open(data / "masks" / f"s{i:02d}.png")) for i in (8, 9, 10)]
    assert [c["gt_pixels"] for c in logged["per_class"]] == np.bincount(
        np.concatenate([m.ravel() for m in masks]), minlength=3
    ).tolist()
    assert logged["num_pixels"] == 3 * 32 * 32


def test_failing_rank_keeps_last_checkpoint_which_resumes(ddp_run, data, tmp_path):
    out = tmp_path / "run"
    # Rank 1 raises before the first step of epoch 2; torchrun then stops rank 0 with SIGTERM.
    proc = torchrun(cli_args(data, out), fail_at="1:2:1")
    assert proc.returncode != 0
    assert "rank 1 fails at epoch 2, step 1 (test hook)" in proc.stderr
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
    # The last good checkpoint loads on its own.
    cfg = TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    model = build_model(ModelConfig(cfg.arch, cfg.encoder, 3, kwargs=cfg.model_kwargs))
    opt = torch.optim.AdamW(model.parameters())
    assert state.load_checkpoint(out, model, opt, None)["epoch"] == 1

    assert_ok(torchrun(["--resume", "--out", str(out), "--quiet"]))
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 2
    # Resumed under torchrun, the run ends exactly where the uninterrupted one did.
    tensors_close(ddp_run / "checkpoint.safetensors", out / "checkpoint.safetensors", atol=1e-7)


# ----------------------------------------------------------------------------- in one process


def test_shard_sampler_scores_every_sample_once():
    shards = [list(ShardSampler(7, 3, r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(ShardSampler(7, 3, r)) for r in range(3)] == [3, 2, 2]
    assert list(ShardSampler(1, 2, 1)) == [] and len(ShardSampler(1, 2, 1)) == 0
    with pytest.raises(ValueError):
        ShardSampler(5, 2, 2)


@pytest.mark.parametrize("n,batch,world", [(10, 4, 2), (12, 6, 3), (9, 4, 4), (16, 8, 2)])
def test_rank_batches_add_up_to_the_one_process_batches(n, batch, world):
    per = batch // world
    steps = n // batch
    single = list(SeededSampler(n, seed=3))
    ranks = [list(SeededSampler(n, seed=3, num_replicas=world, rank=r)) for r in range(world)]
    for r, items in enumerate(ranks):
        assert len(items) == len(SeededSampler(n, 3, num_replicas=world, rank=r))
    for k in range(steps):
        union = sorted(x for items in ranks for x in items[k * per : (k + 1) * per])
        # Same samples and the same augmentation seeds as batch k of one process.
        assert union == sorted(single[k * batch : (k + 1) * batch])


def test_not_under_torchrun_means_one_plain_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert not distributed.launched_by_torchrun() and distributed.setup("auto") is None
    assert distributed.is_main()
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()


def test_backend_and_device_choice(monkeypatch):
    assert distributed.select_backend(torch.device("cuda", 1)) == "nccl"
    assert distributed.select_backend(torch.device("cpu")) == "gloo"
    assert distributed._device_for("cpu", 3) == torch.device("cpu")
    with pytest.raises(PixelwiseError, match="LOCAL_RANK"):
        distributed._device_for("cuda:1", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed._device_for("auto", 1) == torch.device("cpu")
    with pytest.raises(PixelwiseError, match="no CUDA GPU"):
        distributed._device_for("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(PixelwiseError, match="nproc_per_node=2"):
        distributed._device_for("auto", 2)


def test_global_batch_must_split_and_sync_bn_needs_cuda(simple_data, tmp_path, monkeypatch):
    # A context as rank 0 of 2 would see it, without a process group (no collective is reached).
    monkeypatch.setattr(distributed, "setup", lambda device: DistContext(torch.device("cpu"), 0, 2))
    with pytest.raises(PixelwiseError, match="--batch-size 5 is the global batch and must split evenly over the 2"):
        pixelwise.train(data=str(simple_data), out=str(tmp_path / "a"), batch_size=5, progress=False)
    with pytest.raises(PixelwiseError, match="--sync-bn needs CUDA"):
        pixelwise.train(data=str(simple_data), out=str(tmp_path / "b"), batch_size=4, sync_bn=True, progress=False)


def test_torchrun_restart_resumes_only_its_own_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(data="DATA", out=str(run), epochs=3)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert rundir.restart_resumes(cfg, False, False) == (False, False)  # first attempt: as asked
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert rundir.restart_resumes(cfg, False, False) == (False, True)  # failed before a checkpoint: start again
    (run / "checkpoint.json").write_text("{}")
    assert rundir.restart_resumes(cfg, False, True) == (True, True)  # never wipe a run on restart
    other = TrainConfig(data="DATA", out=str(run), epochs=4)
    assert rundir.restart_resumes(other, False, False) == (False, False)  # another command's run: refused later
    runtime_only = TrainConfig(data="DATA", out=str(run), epochs=3, device="cpu", num_workers=2)
    assert rundir.restart_resumes(runtime_only, False, False) == (True, False)


def test_checkpoint_is_whole_whenever_the_writer_is_killed(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)

    def step_and_save(epoch):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        state.save_checkpoint(tmp_path, model, opt, None, {"epoch": epoch})
        return {k: v.clone() for k, v in model.state_dict().items()}

    first = step_and_save(1)
    # Killed after the tensors were renamed into place but before checkpoint.json: the header's
    # copy of the metadata still matches the tensors.
    real_write_json = state.write_json
    monkeypatch.setattr(state, "write_json", lambda *a: (_ for _ in ()).throw(SystemExit(143)))
    with pytest.raises(SystemExit):
        second = step_and_save(2)
    second = {k: v.clone() for k, v in model.state_dict().items()}
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 1  # stale
    fresh = torch.nn.Linear(3, 2)
    assert state.load_checkpoint(tmp_path, fresh, torch.optim.AdamW(fresh.parameters()), None)["epoch"] == 2
    assert all(torch.equal(fresh.state_dict()[k], second[k]) for k in second)
    # Killed while the tensors were written: the previous checkpoint is untouched.
    monkeypatch.setattr(state, "write_json", real_write_json)
    monkeypatch.setattr(state, "save_file", lambda *a, **k: (_ for _ in ()).throw(SystemExit(143)))
    with pytest.raises(SystemExit):
        step_and_save(3)
    assert state.load_checkpoint(tmp_path, fresh, torch.optim.AdamW(fresh.parameters()), None)["epoch"] == 2
    assert not torch.equal(fresh.state_dict()["weight"], first["weight"])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_waits_for_the_epoch_files(monkeypatch):
    distributed._install_sigterm()
    try:
        done = []
        with pytest.raises(SystemExit) as exc, distributed.finish_writes_first():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("wrote")  # still runs: the signal is held until the block ends
        assert done == ["wrote"] and exc.value.code == 128 + signal.SIGTERM
        with pytest.raises(SystemExit):  # outside the block it stops the process at once
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    finally:
        distributed._restore_sigterm()
    assert signal.getsignal(signal.SIGTERM) is not distributed._on_sigterm
