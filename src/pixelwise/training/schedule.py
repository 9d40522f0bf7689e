"""The learning-rate schedule, by optimizer steps or on the clock, and the training loop's clocks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..errors import PixelwiseError

TIME_WARMUP_SHARE = 0.03  # on the clock: linear warm-up over this share of the training time


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up from 1/warmup to 1 over ``warmup`` steps, then cosine or poly(0.9) decay that
    reaches 0 exactly at the last step, or constant.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    raise PixelwiseError(f"unknown schedule '{schedule}'; use cosine, poly or constant")


def clock_lr(base_lr: float, schedule: str, time_share: float, global_step: int, total_steps: int) -> float:
    """The learning rate on the clock: warm-up and decay follow the share of the training time used.

    On a machine faster than planned the epochs run out first: then the schedule follows the
    share of the steps done, whichever is further along, so the decay still reaches its end.
    """
    share = max(time_share, global_step / max(1, total_steps))
    return base_lr * lr_factor(int(share * 10000), 10000, int(TIME_WARMUP_SHARE * 10000), schedule)


@dataclass
class Clock:
    """The training loop's clocks (``time.perf_counter`` seconds) and counters.

    ``before`` is the loop time of the epochs finished before a resume, so a time limit covers
    the whole run, not each start.
    """

    run_start: float = field(default_factory=time.perf_counter)  # this start of the run (a --budget counts from here)
    before: float = 0.0
    loop_start: float = 0.0
    last_save: float = 0.0  # when rank 0 last wrote the epoch files
    steps_done: int = 0  # optimizer steps in this start (for the ETA)
    validations_done: int = 0  # in the whole run

    def start_loop(self, before: float, validations_done: int) -> None:
        """The loop starts now; ``before`` seconds and ``validations_done`` validations came before a resume."""
        self.before, self.validations_done = before, validations_done
        self.loop_start = self.last_save = time.perf_counter()

    def loop_seconds(self) -> float:
        """Seconds of the training loop so far, earlier starts of a resumed run included."""
        return self.before + time.perf_counter() - self.loop_start

    def share(self, time_limit: float) -> float:
        """Share of ``time_limit`` used by the loop so far (1.0 = the time is up)."""
        return self.loop_seconds() / time_limit

    def seconds_per_step(self) -> float:
        """Mean wall seconds per optimizer step in this start."""
        return (time.perf_counter() - self.loop_start) / max(1, self.steps_done)

    def since_start(self) -> float:
        return time.perf_counter() - self.run_start
