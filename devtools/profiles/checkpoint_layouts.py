"""The real adapter checkpoints' key layouts and shapes, as functions of the UNet they attach to.

Owns the key names and tensor shapes of the three adapter files production loads:
- IP-Adapter FaceID Plus v2 for SDXL (ip-adapter-faceid-plusv2_sdxl.bin): {"image_proj", "ip_adapter"},
  IP-Adapter's ProjPlusModel and, per attention processor, the FaceID LoRA and the IP key/value projections;
- IP-Adapter Plus for SDXL, ViT-H (ip-adapter-plus_sdxl_vit-h.safetensors): a perceiver resampler and the
  IP key/value projections of every cross attention, flat "image_proj.*" / "ip_adapter.*" keys;
- SDXL-Lightning's 8-step LoRA (sdxl_lightning_8step_lora.safetensors): kohya key names, rank 64, on every
  Linear and Conv2d of the UNet's blocks;
and random-weight state dicts with those keys (on the meta device: shapes only).

Every builder is a function of the UNet (and a few widths), so one module gives three sizes of the same
layouts: the tiny profile (devtools/profiles/tiny), the random real-size profile of the benchmark
(devtools/profiles/random.py) and the meta-device checks (devtools/counting.py,
tests/test_real_size_wiring.py).
The real-size defaults below are the published files' (checked against their sizes in the manifest).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

# ---------------------------------------------------------------- shared: the perceiver layer

# The CLIP ViT-H/14 image encoder's width, which both IP-Adapters read.
VIT_H_WIDTH = 1280


def perceiver_layer_shapes(prefix: str, width: int, inner: int, ff_mult: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of one layer of IP-Adapter's perceiver resampler as the published checkpoints store it
    (a PerceiverAttention, then a LayerNorm + two-Linear feed-forward). FaceID Plus v2 and IP-Adapter Plus
    both use this layer; each checkpoint stacks it under its own prefix and widths."""
    return {
        f"{prefix}.0.norm1.weight": (width,),
        f"{prefix}.0.norm1.bias": (width,),
        f"{prefix}.0.norm2.weight": (width,),
        f"{prefix}.0.norm2.bias": (width,),
        f"{prefix}.0.to_q.weight": (inner, width),
        f"{prefix}.0.to_kv.weight": (2 * inner, width),
        f"{prefix}.0.to_out.weight": (width, inner),
        f"{prefix}.1.0.weight": (width,),  # the feed-forward's LayerNorm
        f"{prefix}.1.0.bias": (width,),
        f"{prefix}.1.1.weight": (ff_mult * width, width),
        f"{prefix}.1.3.weight": (width, ff_mult * width),
    }


def _is_norm_weight(key: str) -> bool:
    return key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm_out.weight", ".1.0.weight"))


def _random_tensor(
    key: str,
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """LayerNorms at identity, biases at zero, matrices scaled so that activations keep their size."""
    if device.type == "meta":
        return torch.empty(shape, device=device, dtype=dtype)
    if _is_norm_weight(key):
        return torch.ones(shape, device=device, dtype=dtype)
    if len(shape) == 1:
        return torch.zeros(shape, device=device, dtype=dtype)
    values = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    return values.to(device=device, dtype=dtype)


# ---------------------------------------------------------------- IP-Adapter FaceID Plus v2

# Architecture constants (IP-Adapter's ProjPlusModel), fixed by diffusers' converter: it derives heads as
# to_q rows // 64 and renames perceiver layers 0 to 3 only.
FACEID_DEPTH = 4
FACEID_HEAD_DIM = 64
FACEID_ID_MULT = 2  # proj: id_dim -> 2 * id_dim -> tokens * cross_attention_dim
FACEID_FF_MULT = 4
FACEID_LORA_RANK = 128  # the published file's LoRA rank
ARCFACE_DIM = 512


def _attention_modules(unet: UNet2DConditionModel) -> list[tuple[str, torch.nn.Module]]:
    # IP-Adapter numbers its attention processors in the order of unet.attn_processors (diffusers'
    # _load_ip_adapter_loras and the original IPAdapterFaceID.set_ip_adapter both enumerate it).
    return [(name, unet.get_submodule(name.removesuffix(".processor"))) for name in unet.attn_processors]


def faceid_plus_v2_shapes(
    unet: UNet2DConditionModel,
    *,
    id_dim: int = ARCFACE_DIM,
    clip_width: int = VIT_H_WIDTH,
    tokens: int = 4,
    lora_rank: int = FACEID_LORA_RANK,
) -> dict[str, dict[str, tuple[int, ...]]]:
    """Key names and shapes of ip-adapter-faceid-plusv2_sdxl.bin for this UNet, in the real file's order.

    "image_proj" is IP-Adapter's ProjPlusModel (an MLP from the ArcFace embedding to `tokens` tokens,
    then a 4-layer perceiver over the CLIP hidden states); "ip_adapter" holds, for every attention
    processor N, the FaceID LoRA on q/k/v/out and, on cross attention, the IP key/value projections.
    Raises ValueError when the UNet's cross_attention_dim is not a multiple of the 64-wide heads.
    """
    width = unet.config.cross_attention_dim
    if width % FACEID_HEAD_DIM:
        raise ValueError(f"cross_attention_dim {width} must be a multiple of {FACEID_HEAD_DIM}")
    inner = width  # heads = width // 64, each 64 wide
    image_proj: dict[str, tuple[int, ...]] = {
        "proj.0.weight": (FACEID_ID_MULT * id_dim, id_dim),
        "proj.0.bias": (FACEID_ID_MULT * id_dim,),
        "proj.2.weight": (tokens * width, FACEID_ID_MULT * id_dim),
        "proj.2.bias": (tokens * width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
        "perceiver_resampler.proj_in.weight": (width, clip_width),
        "perceiver_resampler.proj_in.bias": (width,),
        "perceiver_resampler.proj_out.weight": (width, width),
        "perceiver_resampler.proj_out.bias": (width,),
        "perceiver_resampler.norm_out.weight": (width,),
        "perceiver_resampler.norm_out.bias": (width,),
    }
    for layer in range(FACEID_DEPTH):
        image_proj |= perceiver_layer_shapes(
            f"perceiver_resampler.layers.{layer}", width, inner, FACEID_FF_MULT
        )

    ip_adapter: dict[str, tuple[int, ...]] = {}
    for index, (name, attention) in enumerate(_attention_modules(unet)):
        hidden = attention.to_q.in_features
        context = attention.to_k.in_features  # hidden for self attention, cross_attention_dim for cross
        for projection, in_features in (
            ("to_q", hidden),
            ("to_k", context),
            ("to_v", context),
            ("to_out", hidden),
        ):
            ip_adapter[f"{index}.{projection}_lora.down.weight"] = (lora_rank, in_features)
            ip_adapter[f"{index}.{projection}_lora.up.weight"] = (hidden, lora_rank)
        if not name.endswith("attn1.processor"):
            ip_adapter[f"{index}.to_k_ip.weight"] = (hidden, width)
            ip_adapter[f"{index}.to_v_ip.weight"] = (hidden, width)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def faceid_plus_v2_state_dict(
    unet: UNet2DConditionModel,
    *,
    id_dim: int = ARCFACE_DIM,
    clip_width: int = VIT_H_WIDTH,
    tokens: int = 4,
    lora_rank: int = FACEID_LORA_RANK,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """A FaceID Plus v2 checkpoint for `unet`, with the real file's keys: {"image_proj", "ip_adapter"}.

    Random weights (LayerNorms at identity); on the meta device, shapes only.
    """
    shapes = faceid_plus_v2_shapes(
        unet, id_dim=id_dim, clip_width=clip_width, tokens=tokens, lora_rank=lora_rank
    )
    device = torch.device(device)
    return {
        part: {key: _random_tensor(key, shape, device, dtype, generator) for key, shape in keys.items()}
        for part, keys in shapes.items()
    }


# ---------------------------------------------------------------- IP-Adapter Plus (ViT-H): appearance

# 16 learned queries, 4 layers of width 1280 with 64-wide heads, over the 257 penultimate ViT-H tokens.
APPEARANCE_QUERIES = 16
APPEARANCE_DEPTH = 4
APPEARANCE_HEAD_DIM = 64  # diffusers' converter derives the heads as to_q rows // 64
APPEARANCE_FF_MULT = 4
REAL_RESAMPLER_WIDTH = 1280


def _cross_attention_indices(unet: UNet2DConditionModel) -> list[tuple[int, int]]:
    """(processor number, hidden size) of each cross attention, numbered as IP-Adapter numbers them."""
    found = []
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            attention = unet.get_submodule(name.removesuffix(".processor"))
            found.append((index, attention.to_q.in_features))
    return found


def ip_adapter_plus_shapes(
    unet: UNet2DConditionModel, *, clip_width: int = VIT_H_WIDTH, width: int = REAL_RESAMPLER_WIDTH
) -> dict[str, tuple[int, ...]]:
    """Flat key names ("image_proj.*", "ip_adapter.*") and shapes of the safetensors file for this UNet.

    Raises ValueError when the resampler width is not a multiple of the 64-wide heads.
    """
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
    clip_width: int = VIT_H_WIDTH,
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
        parts[part][name] = _random_tensor(name, shape, device, dtype, generator)
    return parts


# ---------------------------------------------------------------- SDXL-Lightning LoRA (kohya keys)

LIGHTNING_LORA_RANK = 64
# Only the blocks: conv_in, conv_out and the time/added-condition embeddings are not adapted (788 modules
# for SDXL: attention, feed-forward, proj_in/out, resnet convs, time projections, shortcuts, samplers).
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
    """Key -> shape of the Lightning LoRA for this UNet (alpha is a scalar): for each adapted module,
    `lora_unet_<module path with dots as underscores>.{lora_down.weight, lora_up.weight, alpha}`."""
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
