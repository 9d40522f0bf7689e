"""One training step: the function the Trainer's loop, the planner's measurement and the benchmark all run.

Keeping it in one place means that what the planner times for ``--budget`` is the step that then
trains: autocast, the GradScaler, gradient clipping and the EMA update included where the run
uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..devices import amp_dtype_for
from ..losses import InstanceLoss, build_loss, class_weights_from_counts
from .config import TrainConfig


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    grad_clip: float = 0.0,
    ema: AveragedModel | None = None,
    *,
    channels_last: bool = False,
    forward: nn.Module | None = None,
) -> torch.Tensor:
    """One optimizer step on the batch ``x`` (N, 3, H, W) float, ``y`` (N, H, W) int64 labels (or, for
    instance/panoptic models, (N, 2, H, W): labels and instance ids).

    Forward under autocast (``amp_dtype``; None = float32), loss in float32, backward through the
    ``scaler`` (a disabled GradScaler passes through), gradients clipped to the norm
    ``grad_clip`` (0 = no clipping), optimizer step, then the ``ema`` average updated from
    ``model``. ``forward`` is the module that runs forward and backward when it is not ``model``
    itself: the DistributedDataParallel wrapper of ``model`` under torchrun, whose backward
    averages the gradients over the processes. Returns the batch's loss, detached (0-dim).
    """
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = (forward or model)(x)
    loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if ema is not None:
        ema.update_parameters(model)
    return loss.detach()


@dataclass
class TrainStep:
    """Everything a training step needs, built once per run; calling it runs :func:`train_step`."""

    model: nn.Module  # the bare network: its parameters are clipped, averaged and saved
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None = None
    grad_clip: float = 0.0
    ema: AveragedModel | None = None
    channels_last: bool = False
    forward: nn.Module | None = None  # the DDP wrapper of ``model`` under torchrun; None = ``model``

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_step(
            self.model,
            x,
            y,
            self.criterion,
            self.optimizer,
            self.scaler,
            self.amp_dtype,
            self.grad_clip,
            self.ema,
            channels_last=self.channels_last,
            forward=self.forward,
        )

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    @property
    def eval_model(self) -> nn.Module:
        """What is validated and saved as the model: the EMA average when the run keeps one."""
        return self.ema.module if self.ema is not None else self.model


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether a run of ``config`` on ``device`` trains in channels-last memory (unset: on CUDA only)."""
    return config.channels_last if config.channels_last is not None else device.type == "cuda"


def build_train_step(
    model: nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: TrainConfig,
    device: torch.device,
    *,
    channels_last: bool,
    forward: nn.Module | None = None,
) -> TrainStep:
    """The step ``config`` trains with: AdamW (lr, weight decay), autocast dtype and GradScaler
    for ``device``, gradient clipping and the EMA of the weights when ``config.ema`` > 0.

    The Trainer and the planner's measurement both build their step here, so they run the same.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # The averaged weights (buffers averaged too) are what is validated and saved as the model;
    # the optimizer keeps training the raw weights.
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
        if config.ema > 0
        else None
    )
    amp_dtype = amp_dtype_for(device, config.amp)
    # Only float16 needs loss scaling; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)
    return TrainStep(model, criterion, optimizer, scaler, amp_dtype, config.grad_clip, ema, channels_last, forward)


def build_criterion(
    config: TrainConfig, class_pixels, ignore_index: int, device: torch.device, num_classes: int | None = None
):
    """The loss ``config`` trains with; with ``config.class_weights`` weighted from the training
    split's pixels per class (``class_pixels``, one count per class; unused without class weights),
    and with ``config.boundary_weight`` > 0 its cross-entropy terms weighting the pixels near class
    edges (:func:`pixelwise.losses.boundary_weight_map`; a loss without such a term is refused).

    For ``config.task`` instance/panoptic, an :class:`~pixelwise.losses.InstanceLoss` around that
    loss (outputs (N, C+3, H, W), targets (N, 2, H, W)); C is ``num_classes`` (default: one per
    ``class_pixels`` count).
    """
    weights = None
    if config.class_weights:
        method = "median" if config.class_weights == "auto" else config.class_weights
        weights = torch.as_tensor(class_weights_from_counts(class_pixels, method), dtype=torch.float32, device=device)
    loss = build_loss(
        config.loss, ignore_index=ignore_index, class_weights=weights, boundary_weight=config.boundary_weight
    )
    if config.task == "semantic":
        return loss
    c = num_classes if num_classes is not None else len(class_pixels)
    return InstanceLoss(loss, c, config.centre_sigma, config.centre_weight, config.offset_weight)
