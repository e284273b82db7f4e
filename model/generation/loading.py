"""Loading a weights folder into diffusers' SDXL pipeline and attaching the IP-Adapters and LoRAs to it.

Owns the calls into diffusers' loaders (from_pretrained, load_ip_adapter, lora_state_dict and
load_lora_into_unet) and the CUDA-only module settings; CharacterPipeline (model/generation/pipeline.py)
builds on what these return.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline
from transformers import CLIPVisionModelWithProjection

from model.generation.speeds import TURBO_LORA_ADAPTER
from model.weights.layout import APPEARANCE_ADAPTER_FILE, FACEID_ADAPTER_FILE, SDXL_VARIANT, WeightsLayout


def load_sdxl(
    layout: WeightsLayout, device: torch.device, dtype: torch.dtype, image_encoder: bool = True
) -> StableDiffusionXLPipeline:
    """The folder's SDXL pipeline with its fp16-fix VAE, and the adapters' CLIP image encoder unless
    image_encoder=False (plain SDXL: the benchmark's baseline loads it through here too)."""
    encoder = {}
    if image_encoder:
        encoder["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(
            layout.image_encoder, dtype=dtype
        )
    return StableDiffusionXLPipeline.from_pretrained(
        layout.sdxl,
        vae=AutoencoderKL.from_pretrained(layout.vae, dtype=dtype),
        **encoder,
        variant=SDXL_VARIANT,
        dtype=dtype,
        # The output must not depend on whether the optional invisible-watermark package is installed.
        add_watermarker=False,
    ).to(device)


def pristine_device(device: torch.device, min_gib: float) -> torch.device:
    """Where the pristine copy of the LoRA-adapted weights lives: on a CUDA device with at least min_gib
    of memory, else on the CPU (model/generation/pipeline.py's PRISTINE_ON_GPU_MIN_GIB)."""
    if device.type != "cuda":
        return device
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30  # GPU only
    return device if total_gib >= min_gib else torch.device("cpu")


def attach_adapters(
    text_to_image: StableDiffusionXLPipeline,
    faceid_checkpoint: Path | dict[str, dict[str, torch.Tensor]] | None,
    appearance_checkpoint: Path | dict[str, dict[str, torch.Tensor]],
    turbo_lora: Path | dict[str, torch.Tensor] | None = None,
) -> None:
    """Load the IP-Adapters (FaceID unless its checkpoint is None, then the appearance adapter) into the
    pipeline with diffusers' loaders, and the LoRAs into its UNet as peft adapters (FACEID_LORA_ADAPTER,
    TURBO_LORA_ADAPTER), unmerged: the state CharacterPipeline starts from, and the unmerged reference
    that tests compare the merged weights with."""
    sources, weight_names = [], []
    adapters = [(faceid_checkpoint, FACEID_ADAPTER_FILE)] if faceid_checkpoint is not None else []
    for checkpoint, file_name in adapters + [(appearance_checkpoint, APPEARANCE_ADAPTER_FILE)]:
        # A .bin goes through diffusers' load_state_dict, which uses torch.load(weights_only=True).
        is_file = isinstance(checkpoint, Path)
        sources.append(str(checkpoint.parent) if is_file else checkpoint)
        weight_names.append(checkpoint.name if is_file else file_name)
    # Both adapters in one call: a second call would replace the first. The image encoder is already
    # registered, so image_encoder_folder=None loads nothing more. This also loads FaceID's LoRA into
    # the UNet, as the peft adapter FACEID_LORA_ADAPTER.
    text_to_image.load_ip_adapter(
        sources, subfolder=[""] * len(sources), weight_name=weight_names, image_encoder_folder=None
    )
    if turbo_lora is not None:
        # lora_state_dict converts the kohya key names; loading into the UNet alone (the file has no
        # text-encoder part) spares a warning per text encoder.
        if isinstance(turbo_lora, Path):
            state_dict, alphas = text_to_image.lora_state_dict(
                str(turbo_lora.parent), weight_name=turbo_lora.name
            )
        else:
            state_dict, alphas = text_to_image.lora_state_dict(turbo_lora)
        # low_cpu_mem_usage assigns the tensors instead of copying them into fresh ones: one copy
        # in memory, and it works on the meta device (as load_ip_adapter does for the FaceID LoRA).
        text_to_image.load_lora_into_unet(
            state_dict,
            alphas,
            text_to_image.unet,
            adapter_name=TURBO_LORA_ADAPTER,
            _pipeline=text_to_image,
            low_cpu_mem_usage=True,
        )


def apply_gpu_settings(pipe: StableDiffusionXLPipeline) -> None:
    """CUDA-only inference settings: channels-last convolutions (compilation: CharacterPipeline.compile).

    The weights are already fp16 (serving_device) with the fp16-fix VAE, and diffusers' default
    attention processors on torch 2 use scaled_dot_product_attention (flash / memory-efficient kernels).
    No CPU offload: the production components fit a 24 GB GPU (docs/PERFORMANCE.md).
    """
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
