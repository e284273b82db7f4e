"""The server's memory hygiene per request (model/memory.py): a request's garbage collection scans what that
request made, not the models setup loaded."""

from __future__ import annotations

import gc
import statistics
import time

import pytest

from model.memory import freeze_long_lived_objects, release_freed_memory


def collection_seconds() -> float:
    """Median of 3 timed release_freed_memory() calls (a collection and malloc_trim)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        release_freed_memory()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_frozen_setup_objects_leave_each_collection_short():
    # A stand-in for a loaded server: half a million long-lived objects in containers the collector tracks.
    setup = [{"weights": [index]} for index in range(250_000)]
    before = collection_seconds()
    try:
        frozen = freeze_long_lived_objects()
        assert frozen >= 500_000
        after = collection_seconds()
    finally:
        gc.unfreeze()  # this test process is not a server: give the objects back to the collector
    del setup
    print(f"a collection: {before * 1e3:.1f} ms with the objects scanned, {after * 1e3:.2f} ms frozen")
    assert after < before / 5


@pytest.mark.server
def test_the_server_freezes_its_setup_objects(cog_server):
    log = cog_server.log_path.read_text(encoding="utf-8", errors="replace")
    (line,) = [line for line in log.splitlines() if "long-lived objects frozen" in line]
    frozen = int(line.split("Setup: ")[1].split()[0])
    # The models, diffusers, transformers, insightface, onnxruntime: far more than a request makes.
    assert frozen > 100_000, line
