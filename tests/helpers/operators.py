"""Counting the aten operators one UNet call dispatches: the CPU's deterministic proxy for a GPU's per-step
kernel launches (tests/test_merged_loras.py, tests/test_pulid_pipeline.py)."""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

CPU = torch.device("cpu")


class OperatorCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def unet_inputs(pipe, inputs: dict, guided: bool, size: int = 64) -> tuple[tuple, dict]:
    """One denoising step's UNet arguments, as the pipeline builds them from prepare()'s inputs."""
    text, pooled = inputs["prompt_embeds"], inputs["pooled_prompt_embeds"]
    if guided:
        text = torch.cat([inputs["negative_prompt_embeds"], text])
        pooled = torch.cat([inputs["negative_pooled_prompt_embeds"], pooled])
    batch = text.shape[0]
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch)}
    if "ip_adapter_image_embeds" in inputs:
        added["image_embeds"] = pipe.prepare_ip_adapter_image_embeds(
            None, inputs["ip_adapter_image_embeds"], CPU, 1, do_classifier_free_guidance=guided
        )
    sample = torch.randn(batch, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    return (sample, torch.tensor(500.0)), {"encoder_hidden_states": text, "added_cond_kwargs": added}


@torch.no_grad()
def count_step(unet, args, kwargs) -> int:
    """Operators of one denoising step: the second UNet call with the same arguments (the pipeline hands
    the UNet the same image embeddings at every step, and the first call projects them)."""
    unet(*args, **kwargs)
    with OperatorCounter() as counter:
        unet(*args, **kwargs)
    return sum(counter.counts.values())
