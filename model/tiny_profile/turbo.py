"""A tiny SDXL-Lightning LoRA for the tiny UNet, with the real file's key names (kohya format).

The published sdxl_lightning_8step_lora.safetensors holds a rank-64 LoRA, in fp16, on every Linear and
Conv2d inside the UNet's down, mid and up blocks (788 modules for SDXL: attention, feed-forward, proj_in/out,
resnet convs, time projections, shortcuts, down/up samplers), each as `lora_unet_<module path with dots as
underscores>.{lora_down.weight, lora_up.weight, alpha}`. The builder is a function of the UNet, so the
real-size test builds the real-shape file (on meta) with the same code and checks it against the
published size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from model.layout import WeightsLayout
from model.tiny_profile.sdxl import tiny_unet

SEED = 0
LIGHTNING_LORA_RANK = 64
TINY_LORA_RANK = 4
# Only the blocks: conv_in, conv_out and the time/added-condition embeddings are not adapted.
ADAPTED_PARTS = ("down_blocks", "mid_block", "up_blocks")


def lightning_lora_targets(unet: UNet2DConditionModel) -> list[tuple[str, torch.nn.Module]]:
    """The UNet modules the Lightning LoRA adapts, in module order."""
    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d) and name.split(".")[0] in ADAPTED_PARTS
    ]


def lightning_lora_shapes(
    unet: UNet2DConditionModel, rank: int = LIGHTNING_LORA_RANK
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the Lightning LoRA for this UNet (alpha is a scalar)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, module in lightning_lora_targets(unet):
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear):
            down, up = (rank, module.in_features), (module.out_features, rank)
        else:
            # kohya: the down conv has the layer's kernel, the up conv is 1x1.
            down = (rank, module.in_channels, *module.kernel_size)
            up = (module.out_channels, rank, 1, 1)
        shapes |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": ()}
    return shapes


def lightning_lora_state_dict(
    unet: UNet2DConditionModel,
    *,
    rank: int = LIGHTNING_LORA_RANK,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """A LoRA with the real file's keys for `unet`: random, alpha = rank (scale 1); on meta, shapes only."""
    device = torch.device(device)

    def tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key.endswith(".alpha"):
            # A real number even on meta: diffusers' kohya conversion reads alphas with .item().
            return torch.tensor(float(rank), dtype=dtype)
        if device.type == "meta":
            return torch.empty(shape, device=device, dtype=dtype)
        # Small, so that the adapted model stays close to the base one, as a distilled LoRA does.
        fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
        values = 0.1 * torch.randn(shape, generator=generator) / fan_in**0.5
        return values.to(device=device, dtype=dtype)

    return {key: tensor(key, shape) for key, shape in lightning_lora_shapes(unet, rank).items()}


def write_turbo_lora(root: Path) -> list[Path]:
    """Write the tiny Lightning LoRA for the tiny UNet into WeightsLayout(root); return the file written."""
    layout = WeightsLayout(root)
    with torch.device("meta"):  # only the module names and shapes are read
        unet = tiny_unet()
    state_dict = lightning_lora_state_dict(
        unet, rank=TINY_LORA_RANK, generator=torch.Generator().manual_seed(SEED)
    )
    layout.turbo_lora.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, layout.turbo_lora_file)
    return [layout.turbo_lora_file]
