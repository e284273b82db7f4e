"""The tiny appearance adapter's file: IP-Adapter Plus for SDXL (ViT-H) with a miniature resampler.

The key layout is devtools/profiles/checkpoint_layouts.py's (the published file's); only the resampler
width differs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from devtools.profiles.checkpoint_layouts import ip_adapter_plus_state_dict
from model.weights.layout import WeightsLayout

TINY_RESAMPLER_WIDTH = 64


def write_appearance_adapter(
    root: Path,
    unet: UNet2DConditionModel,
    clip_width: int,
    generator: torch.Generator,
    width: int = TINY_RESAMPLER_WIDTH,
) -> Path:
    """The checkpoint for `unet`, as the published file: one flat fp16 safetensors file."""
    parts = ip_adapter_plus_state_dict(
        unet, clip_width=clip_width, width=width, dtype=torch.float16, generator=generator
    )
    flat = {f"{part}.{name}": tensor for part, tensors in parts.items() for name, tensor in tensors.items()}
    target = WeightsLayout(root).appearance_adapter
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, target)
    return target
