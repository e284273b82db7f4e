"""StageTimer's laps: each waits for the GPU's queued work before it reads the clock, and costs nothing on
the CPU."""

from __future__ import annotations

import torch

from model.timing import StageTimer


class FakeDevice:
    """A clock and a device queue: synchronising makes the clock advance by the queued work's seconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.queued = 0.0
        self.synchronised = 0

    def clock(self) -> float:
        return self.now

    def queue(self, seconds: float) -> None:
        self.queued += seconds

    def synchronize(self) -> None:
        self.synchronised += 1
        self.now += self.queued
        self.queued = 0.0


def test_a_lap_holds_the_work_queued_on_the_device_during_its_stage():
    device = FakeDevice()
    timer = StageTimer(clock=device.clock, synchronize=device.synchronize)
    device.now += 0.5  # host time of the denoising loop
    device.queue(3.0)  # its kernels, still running on the GPU when the loop returns
    timer.lap("denoise")
    device.now += 0.25  # the decode, waited for by its own copy to the host
    timer.lap("decode")
    # Unsynchronised, denoise would read 0.5 and the GPU's 3 s would fall on the decode.
    assert timer.seconds == {"denoise": 3.5, "decode": 0.25}
    # The start only reads the clock; each lap synchronises once.
    assert device.synchronised == 2
    assert timer.total == 3.75


def test_the_default_synchronisation_waits_for_cuda_only_once_cuda_is_in_use(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: calls.append(args))
    # This process has not initialised CUDA (a CPU wheel cannot): a lap makes no CUDA call.
    assert not torch.cuda.is_initialized()
    StageTimer().lap("read_inputs")
    assert calls == []
    # A process that runs on a GPU has initialised CUDA: the timer's default waits for it.
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    timer = StageTimer()
    timer.lap("denoise")
    assert calls == [()]
    assert list(timer.seconds) == ["denoise"]
