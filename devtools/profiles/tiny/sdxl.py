"""Tiny random-weight SDXL, VAE, CLIP image encoder, FaceID Plus v2 and IP-Adapter Plus checkpoints, in the
production layout.

Every file has the class, file name and key names of its production counterpart, only the widths are
miniature: the pipeline loads this folder with exactly the code that loads the real weights. The checkpoint
layouts are devtools/profiles/checkpoint_layouts.py's, functions of the model dimensions;
write_sdxl_folder() writes
any size of modules, so the random real-size profile (devtools/profiles/random.py) uses it too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from devtools.profiles.checkpoint_layouts import faceid_plus_v2_state_dict
from devtools.profiles.stand_in_tokenizers import (
    CLIP_PAD_TOKEN,
    OPEN_CLIP_PAD_TOKEN,
    clip_stand_in_tokenizer,
    stand_in_vocab,
    write_clip_stand_in_tokenizer,
)
from devtools.profiles.tiny.appearance import TINY_RESAMPLER_WIDTH, write_appearance_adapter
from model.weights.layout import SDXL_VARIANT, WeightsLayout

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


def write_sdxl_components(root: Path) -> list[Path]:
    """Write the tiny SDXL, VAE, image encoder and both IP-Adapter checkpoints into WeightsLayout(root).

    Returns the files written. Deterministic: the same files on every run.
    """
    # Seeded module initialisation, without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = tiny_unet()
        vae = tiny_vae()
        image_encoder = tiny_image_encoder()
        text_encoder = tiny_text_encoder()
        text_encoder_2 = tiny_text_encoder_2()
    return write_sdxl_folder(
        root,
        dict(
            unet=unet,
            vae=vae,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
        ),
        clip_width=IMAGE_ENCODER_WIDTH,
        faceid_lora_rank=TINY_LORA_RANK,
        resampler_width=TINY_RESAMPLER_WIDTH,
    )


def write_sdxl_folder(
    root: Path,
    modules: dict[str, torch.nn.Module],
    *,
    clip_width: int,
    faceid_lora_rank: int,
    resampler_width: int,
    seed: int = SEED,
) -> list[Path]:
    """Save SDXL modules (unet, vae, image_encoder, text_encoder, text_encoder_2; any size, any device) with
    stand-in tokenizers, and random FaceID Plus v2 and IP-Adapter Plus checkpoints of the real layouts for
    that UNet, into WeightsLayout(root), as the published files are stored. Returns the files written.

    The tiny profile calls it with miniature modules, the random profile (devtools/profiles/random.py) with
    real-size ones: one writer, so both folders have the production layout by construction.
    """
    layout = WeightsLayout(root)
    unet, vae = modules["unet"], modules["vae"]
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=modules["text_encoder"],
        text_encoder_2=modules["text_encoder_2"],
        tokenizer=clip_stand_in_tokenizer(pad_token=CLIP_PAD_TOKEN),
        tokenizer_2=clip_stand_in_tokenizer(pad_token=OPEN_CLIP_PAD_TOKEN),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        add_watermarker=False,
    )
    # The real files of this variant hold fp16 tensors; the fp16-fix VAE and ViT-H encoder are fp32.
    vae.save_pretrained(layout.vae)
    modules["image_encoder"].save_pretrained(layout.image_encoder)
    pipe.to(torch.float16).save_pretrained(layout.sdxl, variant=SDXL_VARIANT)
    # The fp16-fix VAE in vae/ replaces SDXL's own, so sdxl/ keeps its model_index entry but not the folder.
    shutil.rmtree(layout.sdxl / "vae")
    # SDXL's tokenizer folders hold vocab.json and merges.txt (no tokenizer.json): write that file set, so
    # that transformers builds the tokenizers through the same path as in production.
    write_clip_stand_in_tokenizer(layout.sdxl / "tokenizer", pad_token=CLIP_PAD_TOKEN)
    write_clip_stand_in_tokenizer(layout.sdxl / "tokenizer_2", pad_token=OPEN_CLIP_PAD_TOKEN)

    checkpoint = faceid_plus_v2_state_dict(
        unet,
        clip_width=clip_width,
        lora_rank=faceid_lora_rank,
        dtype=torch.float16,  # as the published checkpoint
        generator=torch.Generator().manual_seed(seed),
    )
    layout.faceid_adapter.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, layout.faceid_adapter)
    del checkpoint
    write_appearance_adapter(
        layout.root,
        unet,
        clip_width=clip_width,
        width=resampler_width,
        generator=torch.Generator().manual_seed(seed + 1),
    )

    return sorted(
        path
        for folder in (layout.sdxl, layout.vae, layout.image_encoder, layout.faceid_adapter.parent)
        for path in folder.rglob("*")
        if path.is_file()
    )


def tiny_unet() -> UNet2DConditionModel:
    """SDXL's UNet layout (text_time conditioning, two attention levels, the deeper with two transformer
    layers) at miniature width, one level deeper than SDXL's.

    The extra attention-free level at the top puts the first attention at the latent / 4 (1024 tokens at
    1024 x 1024) instead of SDXL's latent / 2 (4096): at this width self-attention is nearly all of a call's
    time on a CPU, and every server test generates at the contract's sizes. Measured: a Turbo request
    through Predictor 2.2x faster (median of 3, one thread). The deepest level is the latent / 8, so sides
    below 128 px give it a side of 1 token.
    """
    return UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        # As in SDXL, attention_head_dim is the number of heads per block (a diffusers naming quirk).
        attention_head_dim=(2, 2, 2, 4),
        transformer_layers_per_block=(1, 1, 1, 2),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_PROJECTION,
    )


def tiny_vae() -> AutoencoderKL:
    """Four levels, so 8x downscale to 4 latent channels, with SDXL's scaling factor.

    No mid-block attention (SDXL's VAE has one): at 1024 x 1024 it attends over the 128 x 128 latent's 16,384
    tokens, about 1.5 s per decode and per inpainting encode on one CPU thread, in diffusers' code alone.
    """
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
        mid_block_add_attention=False,
        # madebyollin/sdxl-vae-fp16-fix runs in fp16 without upcasting.
        force_upcast=False,
    )


def _text_config(**overrides) -> CLIPTextConfig:
    vocab = stand_in_vocab()
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
