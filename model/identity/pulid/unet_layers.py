"""Where PuLID's 140 attention tensors go in an SDXL UNet, and the checkpoint's split into its two modules.

pulid_v1.1.safetensors holds 312 fp16 tensors: 172 under `id_adapter.` (the IDFormer) and 140 under
`id_adapter_attn_layers.{i}.id_to_{k,v}.weight` [hidden, 2048]. The reference (ToTheBeginning/PuLID,
pulid/pipeline_v1_1.py `hack_unet_attn_layers` at commit 1aa2fc7) builds that ModuleList from
`unet.attn_processors.values()`, where each self-attention (attn1) holds a processor without weights: so i is
a processor's position in diffusers' order (down blocks, up blocks, mid block), and the 70 cross-attentions
(attn2) take the odd positions 1, 3, ..., 139. Computed from the UNet here, as there, rather than tabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel

from model.identity.pulid.id_attention import ID_TOKEN_WIDTH, PuLIDAttnProcessor

IDFORMER_PREFIX = "id_adapter."
ATTENTION_PREFIX = "id_adapter_attn_layers."
PROCESSOR_SUFFIX = ".processor"


@dataclass(frozen=True)
class IDAttentionLayer:
    """One cross-attention that gets PuLID's ID branch."""

    index: int  # the position in unet.attn_processors: the checkpoint's `id_adapter_attn_layers.{index}`
    processor_name: (
        str  # diffusers' name, e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"
    )
    hidden_size: int  # the attention's width: id_to_k/id_to_v map 2048 -> hidden_size


def id_attention_layers(unet: UNet2DConditionModel) -> list[IDAttentionLayer]:
    """The UNet's cross-attentions in the checkpoint's order (works on the meta device)."""
    layers = []
    for index, name in enumerate(unet.attn_processors):
        attention = unet.get_submodule(name.removesuffix(PROCESSOR_SUFFIX))
        if attention.is_cross_attention:
            layers.append(IDAttentionLayer(index, name, attention.to_q.out_features))
    return layers


def split_checkpoint(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(IDFormer tensors, attention tensors), each with its prefix removed; anything else is an error."""
    idformer, attention, other = {}, {}, []
    for key, tensor in state_dict.items():
        if key.startswith(IDFORMER_PREFIX):
            idformer[key.removeprefix(IDFORMER_PREFIX)] = tensor
        elif key.startswith(ATTENTION_PREFIX):
            attention[key.removeprefix(ATTENTION_PREFIX)] = tensor
        else:
            other.append(key)
    if other:
        raise ValueError(f"not a PuLID checkpoint: unexpected keys {other[:5]}")
    return idformer, attention


def id_attention_processors(
    unet: UNet2DConditionModel, attention_state: dict[str, torch.Tensor]
) -> dict[str, PuLIDAttnProcessor]:
    """The processors for the UNet's cross-attentions, their weights loaded strictly from attention_state
    (`{index}.id_to_{k,v}.weight`), on the UNet's device and dtype. Install them with set_attn_processor."""
    processors = {}
    expected = set()
    for layer in id_attention_layers(unet):
        key = attention_state.get(f"{layer.index}.id_to_k.weight")
        # The ID tokens' width: 2048 in v1.1, smaller in the tiny profile's miniature.
        token_width = key.shape[1] if key is not None else ID_TOKEN_WIDTH
        with torch.device("meta"):
            processor = PuLIDAttnProcessor(layer.hidden_size, token_width)
        own = {
            f"id_to_{kind}.weight": attention_state.get(f"{layer.index}.id_to_{kind}.weight") for kind in "kv"
        }
        missing = [f"{layer.index}.{key}" for key, tensor in own.items() if tensor is None]
        if missing:
            raise ValueError(f"PuLID checkpoint lacks {missing}")
        processor.load_state_dict(own, strict=True, assign=True)
        processors[layer.processor_name] = processor.to(device=unet.device, dtype=unet.dtype)
        expected.update(f"{layer.index}.id_to_{kind}.weight" for kind in "kv")
    if unexpected := sorted(set(attention_state) - expected):
        raise ValueError(
            f"PuLID checkpoint has attention tensors this UNet has no layer for: {unexpected[:5]}"
        )
    return processors
