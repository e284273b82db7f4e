"""A tiny SDXL-Lightning LoRA for the tiny UNet, with the real file's key names (kohya format).

The key layout is devtools/profiles/checkpoint_layouts.py's (the published file's, rank 64 on every Linear
and Conv2d of
the UNet's blocks); here at rank 4 on the tiny UNet.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from devtools.profiles.checkpoint_layouts import lightning_lora_state_dict
from devtools.profiles.tiny.sdxl import tiny_unet
from model.weights.layout import WeightsLayout

SEED = 0
TINY_LORA_RANK = 4


def write_turbo_lora(
    root: Path, unet: UNet2DConditionModel | None = None, rank: int = TINY_LORA_RANK, seed: int = SEED
) -> list[Path]:
    """Write a Lightning LoRA for `unet` (default: the tiny UNet) into WeightsLayout(root); return the file.

    Only the module names and shapes of `unet` are read.
    """
    layout = WeightsLayout(root)
    if unet is None:
        with torch.device("meta"):
            unet = tiny_unet()
    state_dict = lightning_lora_state_dict(unet, rank=rank, generator=torch.Generator().manual_seed(seed))
    layout.turbo_lora.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, layout.turbo_lora_file)
    return [layout.turbo_lora_file]
