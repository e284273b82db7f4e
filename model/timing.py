"""Per-stage wall time of one request, as laps: each lap is the time since the previous one.

Laps, rather than a context manager per stage, so that timing a stage is one line after it and the
request code keeps its shape. The service reports the laps as Cog metrics (`<stage>_seconds`) and in
one log line; scripts/benchmark.py reads the same metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

METRIC_SUFFIX = "_seconds"


class StageTimer:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = self._last = clock()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap (or the start) to `stage`; a repeated stage adds up."""
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
