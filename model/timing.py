"""Per-stage wall time of one request, as laps: each lap is the time since the previous one.

Laps, rather than a context manager per stage, so that timing a stage is one line after it and the
request code keeps its shape. The service reports the laps as Cog metrics (`<stage>_seconds`) and in
one log line; scripts/benchmark.py reads the same metrics.

CUDA runs kernels asynchronously: without a synchronisation a lap would end when the host has queued a
stage's work, not when the GPU has done it, and the next stage that waits on it (the decode's copy to the
host, say) would be charged for the denoising. So each lap first waits for the GPU when CUDA is in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

METRIC_SUFFIX = "_seconds"


def synchronize_cuda() -> None:
    """Wait for the GPU's queued work when this process uses CUDA; nothing otherwise.

    is_initialized() first: it is a flag, where is_available() asks the driver. A process that has not
    initialised CUDA has no work queued on it, so on the CPU a lap costs no call into CUDA at all.
    """
    if torch.cuda.is_initialized() and torch.cuda.is_available():
        torch.cuda.synchronize()


class StageTimer:
    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        synchronize: Callable[[], None] = synchronize_cuda,
    ) -> None:
        self._clock = clock
        self._synchronize = synchronize
        self._started = self._last = clock()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap (or the start) to `stage`; a repeated stage adds up.

        The GPU's queued work is waited for first, so the lap holds the stage's device time too."""
        self._synchronize()
        now = self._clock()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._started

    def record(self, record_metric: Callable[[str, Any], None]) -> None:
        for stage, seconds in self.seconds.items():
            record_metric(stage + METRIC_SUFFIX, round(seconds, 4))

    def summary(self) -> str:
        return ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in self.seconds.items())


def stage_seconds(metrics: dict[str, Any]) -> dict[str, float]:
    """The stage laps among a prediction's metrics, by stage name."""
    return {
        key.removesuffix(METRIC_SUFFIX): float(value)
        for key, value in metrics.items()
        if key.endswith(METRIC_SUFFIX)
    }
