"""The appearance adapter's checkpoint: IP-Adapter Plus for SDXL (ViT-H), by its real key names and shapes.

The published file (h94/IP-Adapter, sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors) holds a perceiver
resampler ("image_proj": 16 learned queries, 4 layers of width 1280 with 64-wide heads, over the 257
penultimate ViT-H tokens, out to cross_attention_dim) and the IP key/value projections of every cross
attention ("ip_adapter.N.to_k_ip/to_v_ip", N numbering all attention processors). The builder is a
function of the model dimensions, so the tiny profile and the real-size wiring check share it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from model.layout import WeightsLayout
from model.tiny_profile.perceiver import perceiver_layer_shapes

APPEARANCE_QUERIES = 16
APPEARANCE_DEPTH = 4
APPEARANCE_HEAD_DIM = 64  # diffusers' converter derives the heads as to_q rows // 64
APPEARANCE_FF_MULT = 4
REAL_RESAMPLER_WIDTH = 1280
TINY_RESAMPLER_WIDTH = 64


def _cross_attention_indices(unet: UNet2DConditionModel) -> list[tuple[int, int]]:
    """(processor number, hidden size) of each cross attention, numbered as IP-Adapter numbers them."""
    found = []
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            attention = unet.get_submodule(name.removesuffix(".processor"))
            found.append((index, attention.to_q.in_features))
    return found


def ip_adapter_plus_shapes(
    unet: UNet2DConditionModel, *, clip_width: int = 1280, width: int = REAL_RESAMPLER_WIDTH
) -> dict[str, tuple[int, ...]]:
    """Flat key names ("image_proj.*", "ip_adapter.*") and shapes of the safetensors file for this UNet."""
    if width % APPEARANCE_HEAD_DIM:
        raise ValueError(f"resampler width {width} must be a multiple of {APPEARANCE_HEAD_DIM}")
    output = unet.config.cross_attention_dim
    shapes: dict[str, tuple[int, ...]] = {
        "image_proj.latents": (1, APPEARANCE_QUERIES, width),
        "image_proj.proj_in.weight": (width, clip_width),
        "image_proj.proj_in.bias": (width,),
        "image_proj.proj_out.weight": (output, width),
        "image_proj.proj_out.bias": (output,),
        "image_proj.norm_out.weight": (output,),
        "image_proj.norm_out.bias": (output,),
    }
    for layer in range(APPEARANCE_DEPTH):
        # Heads of 64 channels as wide as the resampler: the attention's inner width is its width.
        shapes |= perceiver_layer_shapes(f"image_proj.layers.{layer}", width, width, APPEARANCE_FF_MULT)
    for index, hidden in _cross_attention_indices(unet):
        shapes[f"ip_adapter.{index}.to_k_ip.weight"] = (hidden, output)
        shapes[f"ip_adapter.{index}.to_v_ip.weight"] = (hidden, output)
    return shapes


def ip_adapter_plus_state_dict(
    unet: UNet2DConditionModel,
    *,
    clip_width: int = 1280,
    width: int = REAL_RESAMPLER_WIDTH,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint as load_ip_adapter takes a state dict: {"image_proj": ..., "ip_adapter": ...}.

    Random weights (LayerNorms at identity); on the meta device, shapes only.
    """
    device = torch.device(device)
    parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, shape in ip_adapter_plus_shapes(unet, clip_width=clip_width, width=width).items():
        part, _, name = key.partition(".")
        if device.type == "meta":
            tensor = torch.empty(shape, device=device, dtype=dtype)
        elif name.endswith(("norm1.weight", "norm2.weight", "norm_out.weight", ".1.0.weight")):
            tensor = torch.ones(shape, dtype=dtype)
        elif len(shape) == 1:
            tensor = torch.zeros(shape, dtype=dtype)
        else:
            # Scaled so that activations keep their size through each projection.
            tensor = (torch.randn(shape, generator=generator) / shape[-1] ** 0.5).to(dtype)
        parts[part][name] = tensor
    return parts


def write_appearance_adapter(
    root: Path, unet: UNet2DConditionModel, clip_width: int, generator: torch.Generator
) -> Path:
    """The tiny checkpoint, as the published file: one flat fp16 safetensors file."""
    parts = ip_adapter_plus_state_dict(
        unet, clip_width=clip_width, width=TINY_RESAMPLER_WIDTH, dtype=torch.float16, generator=generator
    )
    flat = {f"{part}.{name}": tensor for part, tensors in parts.items() for name, tensor in tensors.items()}
    target = WeightsLayout(root).appearance_adapter
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, target)
    return target
