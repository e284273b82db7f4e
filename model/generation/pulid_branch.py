"""PuLID's ID branch in the UNet: attaching it to the cross-attentions, and setting it for one call.

Owns reading the ID attention weights from pulid_v1.1.safetensors, placing them in the UNet's
cross-attention processors (model/generation/image_kv_cache.py's, which then run the branch of
model/identity/pulid/id_attention.py between the text attention and the appearance adapter's), and the
per-call state: the ID keys and values, computed once per pipeline call from the ID tokens (the null ID in
CFG's unconditional rows), and the inpainting mask on each layer's token grid that confines the branch to
the region being regenerated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from model.generation.image_kv_cache import IPAttnProcessorWithPrecomputedKV
from model.generation.settings import GenerationSettings, IDTokens
from model.identity.pulid import id_attention_layers, id_attention_processors, split_checkpoint
from model.weights.checks import require_file

PROCESSOR_SUFFIX = ".processor"


def load_pulid_attention(path: Path) -> dict[str, torch.Tensor]:
    """PuLID's ID attention tensors (`{index}.id_to_{k,v}.weight`) from pulid_v1.1.safetensors."""
    _, attention = split_checkpoint(load_file(require_file(path, "PuLID weights file")))
    return attention


def attach_id_branches(unet, attention_state: dict[str, torch.Tensor]) -> tuple:
    """Give every cross-attention's processor PuLID's ID branch, loaded strictly; return those attentions.

    The processors are IPAttnProcessorWithPrecomputedKV (project_once_per_call ran): the branch sits
    inside them, between the text attention and the appearance adapter's image attention.
    """
    branches = id_attention_processors(unet, attention_state)
    attentions = []
    for layer in id_attention_layers(unet):
        attention = unet.get_submodule(layer.processor_name.removesuffix(PROCESSOR_SUFFIX))
        if not isinstance(attention.processor, IPAttnProcessorWithPrecomputedKV):
            kind = type(attention.processor).__name__
            raise TypeError(f"{layer.processor_name} is {kind}, not an IP-Adapter processor")
        branch = branches[layer.processor_name]
        # The token grid this layer sees: its level (how many times the latent was halved).
        branch.level = unet_level(layer.processor_name, len(unet.config.block_out_channels))
        attention.processor.id_branch = branch
        attentions.append(attention)
    return tuple(attentions)


def unet_level(name: str, levels: int) -> int:
    """A UNet module's resolution level from its name: down_blocks.i -> i, mid_block -> the lowest,
    up_blocks.j -> levels - 1 - j (the up path mirrors the down path)."""
    block, _, rest = name.partition(".")
    if block == "mid_block":
        return levels - 1
    index = int(rest.split(".", 1)[0])
    return index if block == "down_blocks" else levels - 1 - index


def mask_regions(mask: Image.Image, unet, device: torch.device) -> list[torch.Tensor]:
    """The inpainting mask ("L", white = regenerate) on the token grid of every level of the UNet (index:
    the level), each [1, tokens, 1] in [0, 1]: the share of each token's pixels to regenerate (area
    averaging).

    The latent is the image / 8; each down block halves it (stride-2 convolutions round up).
    """
    weights = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
    height, width = -(-mask.height // 8), -(-mask.width // 8)
    regions = []
    for _ in unet.config.block_out_channels:
        grid = F.interpolate(weights, size=(height, width), mode="area")
        regions.append(grid.reshape(1, height * width, 1).to(device=device, dtype=unet.dtype))
        height, width = -(-height // 2), -(-width // 2)
    return regions


def set_id_branches(
    unet, attentions: tuple, settings: GenerationSettings, guided: bool, device: torch.device
) -> None:
    """PuLID: this call's ID keys and values in every cross-attention (the null ID in CFG's
    unconditional rows), confined to the inpainting mask when inpainting; cleared otherwise."""
    for attention in attentions:
        attention.processor.id_branch.forget()
    face = settings.face
    if not isinstance(face, IDTokens) or not settings.adapters.id_scale:
        return
    tokens = torch.cat((face.null, face.tokens)) if guided else face.tokens
    tokens = tokens.to(device=device, dtype=unet.dtype)
    regions = mask_regions(settings.mask_image, unet, device) if settings.mask_image is not None else None
    for attention in attentions:
        branch = attention.processor.id_branch
        region = regions[branch.level] if regions is not None else None
        adapters = settings.adapters
        branch.precompute(attention, tokens, adapters.zero_tokens, adapters.id_scale, region)
