"""Tiny random-weight SDXL, VAE, CLIP image encoder, FaceID Plus v2 and IP-Adapter Plus checkpoints, in the
production layout.

Every file has the class, file name and key names of its production counterpart, only the widths are
miniature: the pipeline loads this folder with exactly the code that loads the real weights. The FaceID
checkpoint builder is a function of the model dimensions, so the real-size wiring test builds the
real-shape checkpoint (on the meta device) with the same code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from model.layout import SDXL_VARIANT, WeightsLayout
from model.tiny_profile.appearance import write_appearance_adapter
from model.tiny_profile.perceiver import perceiver_layer_shapes

SEED = 0

# The real SDXL scheduler config, copied so that the tiny profile denoises on the production schedule.
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}

TEXT_WIDTH = 32  # each text encoder; the UNet's cross_attention_dim is their sum, as in SDXL (768 + 1280)
TEXT_PROJECTION = 32  # pooled text embedding of text_encoder_2 (1280 in SDXL)
TIME_EMBED_DIM = 8  # addition_time_embed_dim (256 in SDXL); six micro-conditioning numbers are embedded
CROSS_ATTENTION_DIM = 2 * TEXT_WIDTH
IMAGE_ENCODER_WIDTH = 32  # ViT-H/14 is 1280 wide; 224 input and patch 14 are kept, so 257 tokens
TINY_LORA_RANK = 4  # the real FaceID LoRA has rank 128
# SDXL's first tokenizer (OpenAI CLIP) pads with the end-of-text token, the second (OpenCLIP) with "!".
CLIP_PAD_TOKEN = "<|endoftext|>"
OPEN_CLIP_PAD_TOKEN = "!"

# FaceID Plus v2 architecture constants (IP-Adapter's ProjPlusModel), fixed by diffusers' converter:
# it derives heads as to_q rows // 64 and renames perceiver layers 0 to 3 only.
FACEID_DEPTH = 4
FACEID_HEAD_DIM = 64
FACEID_ID_MULT = 2  # proj: id_dim -> 2 * id_dim -> tokens * cross_attention_dim
FACEID_FF_MULT = 4


def write_sdxl_components(root: Path) -> list[Path]:
    """Write the tiny SDXL, VAE, image encoder and FaceID checkpoint into WeightsLayout(root).

    Returns the files written. Deterministic: the same files on every run.
    """
    layout = WeightsLayout(root)
    # Seeded module initialisation, without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = tiny_unet()
        vae = tiny_vae()
        image_encoder = tiny_image_encoder()
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=tiny_text_encoder(),
            text_encoder_2=tiny_text_encoder_2(),
            tokenizer=tiny_tokenizer(pad_token=CLIP_PAD_TOKEN),
            tokenizer_2=tiny_tokenizer(pad_token=OPEN_CLIP_PAD_TOKEN),
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
            add_watermarker=False,
        )
    # The real files of this variant hold fp16 tensors; the fp16-fix VAE and ViT-H encoder are fp32.
    vae.save_pretrained(layout.vae)
    image_encoder.save_pretrained(layout.image_encoder)
    pipe.to(torch.float16).save_pretrained(layout.sdxl, variant=SDXL_VARIANT)
    # The fp16-fix VAE in vae/ replaces SDXL's own, so sdxl/ keeps its model_index entry but not the folder.
    shutil.rmtree(layout.sdxl / "vae")
    # SDXL's tokenizer folders hold vocab.json and merges.txt (no tokenizer.json): write that file set, so
    # that transformers builds the tokenizers through the same path as in production.
    write_tiny_tokenizer(layout.sdxl / "tokenizer", pad_token=CLIP_PAD_TOKEN)
    write_tiny_tokenizer(layout.sdxl / "tokenizer_2", pad_token=OPEN_CLIP_PAD_TOKEN)

    checkpoint = faceid_plus_v2_state_dict(
        unet,
        clip_width=IMAGE_ENCODER_WIDTH,
        lora_rank=TINY_LORA_RANK,
        dtype=torch.float16,  # as the published checkpoint
        generator=torch.Generator().manual_seed(SEED),
    )
    layout.faceid_adapter.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, layout.faceid_adapter)
    write_appearance_adapter(
        layout.root, unet, clip_width=IMAGE_ENCODER_WIDTH, generator=torch.Generator().manual_seed(SEED + 1)
    )

    return sorted(
        path
        for folder in (layout.sdxl, layout.vae, layout.image_encoder, layout.faceid_adapter.parent)
        for path in folder.rglob("*")
        if path.is_file()
    )


def tiny_unet() -> UNet2DConditionModel:
    """SDXL's UNet layout (text_time conditioning, no attention at full latent size) at miniature width."""
    return UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        # As in SDXL, attention_head_dim is the number of heads per block (a diffusers naming quirk).
        attention_head_dim=(2, 2, 4),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_PROJECTION,
    )


def tiny_vae() -> AutoencoderKL:
    """Four levels, so 8x downscale to 4 latent channels, with SDXL's scaling factor."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=1024,
        scaling_factor=0.13025,
        # madebyollin/sdxl-vae-fp16-fix runs in fp16 without upcasting.
        force_upcast=False,
    )


def _text_config(**overrides) -> CLIPTextConfig:
    vocab = tiny_vocab()
    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **overrides,
    )


def tiny_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(_text_config(hidden_act="quick_gelu"))


def tiny_text_encoder_2() -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(_text_config(hidden_act="gelu", projection_dim=TEXT_PROJECTION))


def tiny_image_encoder() -> CLIPVisionModelWithProjection:
    """ViT-H/14's geometry (224 input, patch 14: 256 patches + CLS = 257 tokens) at miniature width."""
    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=IMAGE_ENCODER_WIDTH,
            intermediate_size=2 * IMAGE_ENCODER_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=14,
            projection_dim=IMAGE_ENCODER_WIDTH,
            hidden_act="gelu",
        )
    )


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable character map, which the tokenizer's ByteLevel step applies.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


# A few merges so that the tokenizer exercises BPE merging, not only single characters.
TINY_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "i n", "o n</w>", "e r</w>")


def tiny_vocab() -> dict[str, int]:
    """Every byte alone and at a word end (so any text tokenizes), the merges, then the special tokens."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(merge.split()) for merge in TINY_MERGES]
    # Special tokens last, as in CLIP: the end-of-text id is the largest, which CLIP's pooling relies on.
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def tiny_tokenizer(pad_token: str) -> CLIPTokenizer:
    return CLIPTokenizer(
        vocab=tiny_vocab(),
        merges=[tuple(merge.split()) for merge in TINY_MERGES],
        pad_token=pad_token,
        model_max_length=77,
    )


def write_tiny_tokenizer(folder: Path, pad_token: str) -> None:
    """The file set of SDXL's tokenizer folders, with the tiny vocabulary."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _attention_modules(unet: UNet2DConditionModel) -> list[tuple[str, torch.nn.Module]]:
    # IP-Adapter numbers its attention processors in the order of unet.attn_processors (diffusers'
    # _load_ip_adapter_loras and the original IPAdapterFaceID.set_ip_adapter both enumerate it).
    return [(name, unet.get_submodule(name.removesuffix(".processor"))) for name in unet.attn_processors]


def faceid_plus_v2_shapes(
    unet: UNet2DConditionModel,
    *,
    id_dim: int = 512,
    clip_width: int = 1280,
    tokens: int = 4,
    lora_rank: int = 128,
) -> dict[str, dict[str, tuple[int, ...]]]:
    """Key names and shapes of ip-adapter-faceid-plusv2_sdxl.bin for this UNet, in the real file's order.

    "image_proj" is IP-Adapter's ProjPlusModel (an MLP from the ArcFace embedding to `tokens` tokens,
    then a 4-layer perceiver over the CLIP hidden states); "ip_adapter" holds, for every attention
    processor N, the FaceID LoRA on q/k/v/out and, on cross attention, the IP key/value projections.
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


def _is_norm_weight(key: str) -> bool:
    return key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm_out.weight", ".1.0.weight"))


def faceid_plus_v2_state_dict(
    unet: UNet2DConditionModel,
    *,
    id_dim: int = 512,
    clip_width: int = 1280,
    tokens: int = 4,
    lora_rank: int = 128,
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

    def tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if device.type == "meta":
            return torch.empty(shape, device=device, dtype=dtype)
        if _is_norm_weight(key):
            return torch.ones(shape, device=device, dtype=dtype)
        if len(shape) == 1:
            return torch.zeros(shape, device=device, dtype=dtype)
        # Scaled so that activations keep their size through each projection.
        values = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        return values.to(device=device, dtype=dtype)

    return {part: {key: tensor(key, shape) for key, shape in keys.items()} for part, keys in shapes.items()}
