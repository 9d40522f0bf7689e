"""Training in several processes with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun`` starts one process per GPU (or per CPU slot) and describes the job to each in
environment variables: ``RANK`` (0..WORLD_SIZE-1 over all machines), ``WORLD_SIZE``,
``LOCAL_RANK`` (the index on this machine, which picks the GPU), ``LOCAL_WORLD_SIZE`` and
``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous. :func:`setup` reads them and joins the
process group; without them pixelwise runs as one ordinary process and nothing here is used.

The backend follows the device: NCCL for CUDA tensors, gloo on CPU. Rank 0 is the *main*
process: it alone writes the run directory (config, checkpoints, bundle, logs) and shows
progress; the others train their shard and take part in every collective.

When one process fails, torchrun stops the others with SIGTERM (and SIGKILL some 30 s later).
Inside a process group pixelwise turns SIGTERM into ``SystemExit`` so that temporary files are
removed on the way out, and :func:`finish_writes_first` holds it back while rank 0 writes an
epoch's files, so that epoch is kept whole.

Test hook: ``PIXELWISE_TEST_FAIL_AT=RANK:EPOCH:STEP`` (1-based epoch and step) makes that rank
raise ``RuntimeError`` just before that training step, in the first attempt only (not after a
torchrun restart). The test suite uses it to check that a rank failing mid-run leaves the last
finished epoch's checkpoint loadable and resumable.

After a restart of the worker group (``torchrun --max-restarts N``) the same command runs again;
the trainer then continues the run in ``--out`` when it was started by this same command
(same ``config.yaml``), so restarts resume instead of refusing the existing run directory.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..devices import resolve_device
from ..errors import PixelwiseError

__all__ = [
    "DistContext",
    "ShardSampler",
    "finish_writes_first",
    "is_main",
    "launched_by_torchrun",
    "restart_count",
    "select_backend",
    "setup",
]

FAIL_HOOK_ENV = "PIXELWISE_TEST_FAIL_AT"


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (torchrun sets these variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def select_backend(device: torch.device) -> str:
    """``nccl`` when the process trains on a CUDA device, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise PixelwiseError(
            f"environment variable {name}={value!r} is not a whole number; start with torchrun"
        ) from None


def is_main() -> bool:
    """Whether this process is rank 0 (also True in a plain single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@dataclass
class DistContext:
    """Where this process stands in the job. ``world_size == 1`` and ``rank == 0`` for one process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    owns_group: bool = False  # True when setup() created the process group (and close() ends it)

    @property
    def enabled(self) -> bool:
        """True inside a process group, even a group of one."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (no-op in one process)."""
        if not self.enabled:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64; unchanged in one process)."""
        if not self.enabled or self.world_size == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every process (sent as UTF-8 bytes in tensors, never pickled)."""
        if not self.enabled or self.world_size == 1:
            return text
        dev = self._comm_device()
        data = text.encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
        dist.broadcast(size, src=0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
        if self.is_main and data:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        if buf.numel():
            dist.broadcast(buf, src=0)
        return bytes(buf.cpu().tolist()).decode()

    def close(self) -> None:
        """Leave the process group if setup() created it, and restore the SIGTERM handler."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False
        _restore_sigterm()


def _device_for(requested: str, local_rank: int) -> torch.device:
    """The device of this process under torchrun: ``cuda:LOCAL_RANK`` unless ``cpu`` is asked for."""
    if requested not in ("auto", "cuda", "cpu"):
        raise PixelwiseError(
            f"--device {requested} cannot be used with torchrun: each process takes the GPU of its LOCAL_RANK; "
            "use --device auto, cuda or cpu"
        )
    dev = resolve_device(requested)  # the CPU for auto without CUDA; an error for cuda without it
    if dev.type == "cpu":
        return dev
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise PixelwiseError(
            f"process LOCAL_RANK={local_rank} has no GPU: this machine shows {count}; "
            f"start at most --nproc_per_node={count} processes per machine"
        )
    return torch.device("cuda", local_rank)


def setup(device: str = "auto") -> DistContext | None:
    """Join the process group described by torchrun's environment; None when not launched by it.

    The device is ``cuda:LOCAL_RANK`` with NCCL when CUDA is available (or ``--device cuda``),
    else the CPU with gloo. A process group that already exists (created by the caller's own
    script) is used as it is and left open afterwards.
    """
    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend()
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
        dev = _device_for("cuda" if backend == "nccl" else "cpu", local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistContext(dev, rank, world, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), backend, False)
    if not launched_by_torchrun():
        return None
    if not dist.is_available():
        raise PixelwiseError("this PyTorch build has no torch.distributed; install the standard PyTorch wheel")
    rank, world, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    dev = _device_for(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = select_backend(dev)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    _install_sigterm()
    return DistContext(dev, rank, world, local_rank, local_world, backend, True)


class _Termination:
    previous = None  # the handler before ours; None when ours is not installed
    holding = False
    pending: int | None = None


def _on_sigterm(signum, frame) -> None:
    if _Termination.holding:
        _Termination.pending = signum
        return
    raise SystemExit(128 + signum)


def _install_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread() or _Termination.previous is not None:
        return
    _Termination.previous = signal.signal(signal.SIGTERM, _on_sigterm)


def _restore_sigterm() -> None:
    if _Termination.previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _Termination.previous)
        _Termination.previous = None


@contextmanager
def finish_writes_first():
    """Hold back a SIGTERM that arrives inside the block until the block has finished."""
    _Termination.holding, _Termination.pending = True, None
    try:
        yield
    finally:
        _Termination.holding = False
        if _Termination.pending is not None:
            signum, _Termination.pending = _Termination.pending, None
            raise SystemExit(128 + signum)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: disjoint shards that cover every index once.

    For validation and evaluation: unlike ``DistributedSampler`` it never pads the last shard
    with repeated samples, so summing per-process counts scores every sample exactly once.
    """

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.n, self.num_replicas, self.rank = n, num_replicas, rank

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


def restart_count() -> int:
    """How many times torchrun has restarted the worker group (``--max-restarts``); 0 at first."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def fail_point(rank: int, epoch: int, step: int) -> None:
    """Test hook: raise if ``PIXELWISE_TEST_FAIL_AT`` names this rank, 1-based epoch and step.

    Only in the first attempt: after a torchrun restart the run goes on past that step.
    """
    spec = os.environ.get(FAIL_HOOK_ENV)
    if not spec or restart_count() > 0:
        return
    try:
        r, e, s = (int(v) for v in spec.split(":"))
    except ValueError:
        raise PixelwiseError(f"{FAIL_HOOK_ENV}={spec!r}: expected RANK:EPOCH:STEP, e.g. 1:2:1") from None
    if (r, e, s) == (rank, epoch, step):
        raise RuntimeError(f"{FAIL_HOOK_ENV}: rank {rank} fails at epoch {epoch}, step {step} (test hook)")
