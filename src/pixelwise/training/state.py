"""Checkpoints (``checkpoint.safetensors`` + ``checkpoint.json``) and the record a run keeps across epochs.

A checkpoint holds the last finished epoch: weights, optimizer tensors, the EMA average when
the run keeps one, the GradScaler state, and the :class:`TrainingRecord` (history, best epoch,
early-stopping count). It is what ``--resume`` continues from, bit for bit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..bundle import state_dict_for_saving
from ..errors import PixelwiseError
from ..fileio import atomic_path, write_json

CHECKPOINT_META_KEY = "pixelwise_checkpoint"  # safetensors header entry holding checkpoint.json's content


@dataclass
class TrainingRecord:
    """What a run has done so far: one history row per epoch and its best validation.

    ``best`` is the best validation mIoU (-1 before the first validation); ``since_best`` counts
    validations without improvement (early stopping).
    """

    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    best_metrics: dict | None = None
    stopped_early: bool = False

    def score(self, epoch: int, metrics: dict) -> bool:
        """Record the validation ``metrics`` of 1-based ``epoch``; True when it is the best so far."""
        score = metrics["miou"] if metrics["miou"] is not None else 0.0
        if score > self.best:
            self.best, self.best_epoch, self.best_metrics, self.since_best = score, epoch, metrics, 0
            return True
        self.since_best += 1
        return False

    def checkpoint_state(self, epoch: int) -> dict:
        """The JSON part of the checkpoint after 1-based ``epoch`` (key order as in checkpoint.json)."""
        return {
            "epoch": epoch,
            "history": self.history,
            "best_miou": self.best,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "best_metrics": self.best_metrics,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_checkpoint(cls, meta: dict) -> TrainingRecord:
        return cls(
            meta["history"],
            meta["best_miou"],
            meta["best_epoch"],
            meta["since_best"],
            meta.get("best_metrics"),
            bool(meta.get("stopped_early")),
        )


def save_checkpoint(run: Path, model, optimizer, scaler, state: dict, ema=None) -> None:
    """Weights and optimizer tensors to safetensors, everything else to JSON.

    The JSON metadata is stored twice: inside the safetensors header (what :func:`load_checkpoint`
    reads) and as ``checkpoint.json`` (for people and tools). The safetensors file is replaced in
    one atomic rename, so a crash or a kill at any moment (for example torchrun stopping the
    other processes when one fails) leaves either the previous or the new complete checkpoint.
    """
    tensors = {f"model/{k}": v for k, v in state_dict_for_saving(model).items()}
    if ema is not None:  # the averaged weights and their update count (AveragedModel.state_dict)
        tensors.update({f"ema/{k}": v for k, v in state_dict_for_saving(ema).items()})
    opt = optimizer.state_dict()
    opt_scalars: dict = {}
    for pid, pstate in opt["state"].items():
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"optim/{pid}/{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                opt_scalars[f"{pid}/{k}"] = v
    token = f"{state['epoch']}-{time.time_ns()}"
    meta = dict(state)
    meta["token"] = token
    meta["optimizer"] = {"param_groups": opt["param_groups"], "scalars": opt_scalars}
    meta["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    with atomic_path(run / "checkpoint.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"token": token, CHECKPOINT_META_KEY: json.dumps(meta)})
    write_json(run / "checkpoint.json", meta)


def _read(run: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of the checkpoint in ``run``; a damaged or inconsistent one is a PixelwiseError."""
    try:
        with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(run / "checkpoint.safetensors"))
        token = header.get("token")
        # The header's own copy is consistent with the tensors by construction; checkpoint.json
        # may lag one epoch behind it after a kill between the two writes.
        embedded = header.get(CHECKPOINT_META_KEY)
        meta = json.loads(embedded) if embedded else json.loads((run / "checkpoint.json").read_text())
    except Exception as e:  # any damage: missing file, bad JSON, bad safetensors header
        raise PixelwiseError(
            f"{run}: checkpoint cannot be read ({e.__class__.__name__}); it cannot be resumed"
        ) from None
    if token != meta.get("token"):
        raise PixelwiseError(
            f"{run}: checkpoint.json and checkpoint.safetensors are from different epochs (interrupted write); "
            "start again with --overwrite"
        )
    return tensors, meta


def load_checkpoint(run: Path, model, optimizer, scaler, ema=None) -> dict:
    """Load the checkpoint in ``run`` into ``model``, ``optimizer``, ``scaler`` and ``ema``; returns its metadata."""
    tensors, meta = _read(run)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True)
    if ema is not None:  # a resumed run keeps its own config, so an EMA run's checkpoint holds the average
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}, strict=True)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["optimizer"]["scalars"].items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta
