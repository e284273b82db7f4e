"""Production wiring at real size, on empty (meta) weights: what the tiny profile cannot show.

The real SDXL UNet, text encoders, VAE and ViT-H image encoder are built from their published configs
(specs/sdxl-architecture) on the meta device, so no memory is allocated and no compute is done,
but every shape is checked. FaceID Plus v2 and IP-Adapter Plus checkpoints with the real shapes are built
by the same builders as the tiny ones and attached by CharacterPipeline.from_sdxl, the code that load()
runs.

What cannot run on meta tensors: the denoising loop, because EulerDiscreteScheduler.set_timesteps
copies its sigmas to the CPU ("Cannot copy out of meta tensor") and step() compares sigma values; and
the conversion of the decoded image to PIL, which needs numbers. So the loop is replaced here by one
UNet forward with the exact inputs that CharacterPipeline.prepare() hands to the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection, IPAdapterPlusImageProjection
from peft.tuners.lora import LoraLayer
from PIL import Image

from devtools.counting import META, SDXL_SPECS, real_size_modules
from devtools.counting import SERVING_DTYPE as DTYPE
from devtools.profiles.checkpoint_layouts import (
    FACEID_LORA_RANK,
    VIT_H_WIDTH,
    faceid_plus_v2_shapes,
    ip_adapter_plus_shapes,
)
from devtools.profiles.tiny.sdxl import SCHEDULER_CONFIG
from model.generation.pipeline import (
    APPEARANCE_ADAPTER_INDEX,
    FACEID_LORA_ADAPTER,
)
from model.generation.settings import AdapterScales, FaceCondition, GenerationSettings
from model.generation.speeds import TURBO_LORA_ADAPTER
from model.weights.layout import FACEID_ADAPTER_FILE
from model.weights.manifest import production_manifest

# The parameter counts in specs/sdxl-architecture/README.md, in millions.
PUBLISHED_PARAMETERS = {
    "unet": 2567.5,
    "vae": 83.7,
    "text_encoder": 123.1,
    "text_encoder_2": 694.7,
    "image_encoder": 632.1,
}
REQUEST = GenerationSettings(
    prompt="a portrait photo of a woman in a garden",
    negative_prompt="blurry",
    width=1024,
    height=1024,
    seed=1,
    num_inference_steps=2,
    guidance_scale=5.0,
    face=FaceCondition(
        embedding=np.full(512, 512**-0.5, dtype=np.float32), face_crop=Image.new("RGB", (224, 224))
    ),
)


def config(name: str) -> dict:
    return json.loads((SDXL_SPECS / name).read_text())


def test_empty_real_size_modules_have_the_published_parameter_counts():
    for name, module in real_size_modules().items():
        millions = sum(parameter.numel() for parameter in module.parameters()) / 1e6
        assert round(millions, 1) == PUBLISHED_PARAMETERS[name], name


def test_tiny_profile_denoises_on_the_real_scheduler_config():
    assert config("scheduler_config.json") == SCHEDULER_CONFIG


def test_real_shape_faceid_checkpoint_fills_the_published_file():
    unet = real_size_modules()["unet"]
    shapes = faceid_plus_v2_shapes(unet, clip_width=VIT_H_WIDTH, lora_rank=FACEID_LORA_RANK)
    # 70 transformer blocks: a LoRA on q/k/v/out of all 140 attention processors, IP k/v on the 70 cross.
    assert len(shapes["ip_adapter"]) == 140 * 8 + 70 * 2
    tensors = [shape for part in shapes.values() for shape in part.values()]
    fp16_bytes = 2 * sum(math.prod(shape) for shape in tensors)
    (published,) = [
        entry for entry in production_manifest().files if entry.path.endswith(FACEID_ADAPTER_FILE)
    ]
    # The published fp16 file is these tensors plus torch.save's zip record of each (106 bytes on
    # average for this file). The bounds are tighter than the smallest LoRA matrix (2 * 128 * 320 bytes),
    # so a wrong rank, a missing processor or a misshapen projection would fall outside them.
    overhead = published.size - fp16_bytes
    assert 80 * len(tensors) < overhead < 130 * len(tensors)


def test_faceid_adapter_and_lora_attach_to_the_real_unet(character):
    unet = character.text_to_image.unet
    projection = character.faceid_projection
    assert isinstance(projection, IPAdapterFaceIDPlusImageProjection)
    assert (projection.num_tokens, projection.embed_dim) == (4, unet.config.cross_attention_dim)
    assert projection.proj_in.in_features == VIT_H_WIDTH

    ip_processors = [p for p in unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert len(ip_processors) == 70
    assert all(p.to_k_ip[0].in_features == unet.config.cross_attention_dim for p in ip_processors)

    assert character.loras.layer_count(FACEID_LORA_ADAPTER) == 4 * 140
    assert character.loras.ranks(FACEID_LORA_ADAPTER) == {FACEID_LORA_RANK}
    # The Turbo speed's LoRA is loaded beside it; neither is merged until a request needs it, and no
    # peft layer is left in the UNet (the LoRAs are merged into its weights per request).
    assert character.loras.adapters == {FACEID_LORA_ADAPTER, TURBO_LORA_ADAPTER}
    assert character.loras.merged == {}
    assert not any(isinstance(m, LoraLayer) for m in unet.modules())

    # from_pipe shares the modules and keeps their dtype (its default would cast them to float32).
    assert character.inpaint.unet is unet
    assert unet.dtype == DTYPE


def test_real_unet_runs_a_guided_1024_request_with_the_face_tokens(character):
    pipe, inputs = character.prepare(REQUEST)
    assert pipe is character.text_to_image
    # CLIP ViT-H penultimate hidden states of the crop, with the unconditional half for guidance.
    assert character.faceid_projection.clip_embeds.shape == (2, 1, 257, VIT_H_WIDTH)

    with torch.no_grad():
        text, negative_text, pooled, negative_pooled = pipe.encode_prompt(
            REQUEST.prompt,
            device=META,
            do_classifier_free_guidance=True,
            negative_prompt=REQUEST.negative_prompt,
        )
        image_embeds = pipe.prepare_ip_adapter_image_embeds(
            None, inputs["ip_adapter_image_embeds"], META, 1, do_classifier_free_guidance=True
        )
        latent = (REQUEST.height // pipe.vae_scale_factor, REQUEST.width // pipe.vae_scale_factor)
        noise_prediction = pipe.unet(
            torch.empty(2, 4, *latent, device=META, dtype=DTYPE),
            torch.tensor(999.0, device=META),
            encoder_hidden_states=torch.cat([negative_text, text]),
            added_cond_kwargs={
                "text_embeds": torch.cat([negative_pooled, pooled]),
                "time_ids": torch.empty(2, 6, device=META, dtype=DTYPE),
                "image_embeds": image_embeds,
            },
        ).sample
    assert text.shape == (1, 77, 2048)
    assert pooled.shape == (1, 1280)
    assert noise_prediction.shape == (2, 4, 128, 128)


def test_real_shape_appearance_checkpoint_matches_the_published_file_size():
    shapes = ip_adapter_plus_shapes(real_size_modules()["unet"], clip_width=VIT_H_WIDTH)
    # The resampler (latents, proj_in/out, norm_out, 4 layers of 11 tensors); IP k/v on 70 cross attentions.
    assert len(shapes) == 7 + 4 * 11 + 70 * 2
    megabytes = 2 * sum(math.prod(shape) for shape in shapes.values()) / 1e6
    # About 848 MB is the size model lists commonly give for the published fp16 file (the manifest pins no
    # byte count: no citable exact one was found offline); its safetensors header adds a few KB. A wrong
    # width, query count or layer count would be tens of MB off.
    assert megabytes == pytest.approx(847.5, abs=0.1)


def test_appearance_adapter_attaches_beside_faceid_and_runs_without_a_face(character):
    unet = character.text_to_image.unet
    projection = unet.encoder_hid_proj.image_projection_layers[APPEARANCE_ADAPTER_INDEX]
    assert isinstance(projection, IPAdapterPlusImageProjection)
    assert projection.latents.shape == (1, 16, 1280)
    ip_processors = [p for p in unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert {len(p.to_k_ip) for p in ip_processors} == {2}
    assert {tuple(p.num_tokens) for p in ip_processors} == {(4, 16)}

    settings = dataclasses.replace(
        REQUEST,
        adapters=AdapterScales(ip_adapter=0.0, faceid_lora=0.0, face_structure=0.0, appearance=0.6),
        face=None,
        appearance_image=Image.new("RGB", (640, 640)),
    )
    pipe, inputs = character.prepare(settings)
    with torch.no_grad():
        image_embeds = pipe.prepare_ip_adapter_image_embeds(
            None, inputs["ip_adapter_image_embeds"], META, 1, do_classifier_free_guidance=True
        )
        tokens = unet.encoder_hid_proj(image_embeds)
    # FaceID's 4 tokens (from zeros) and the appearance adapter's 16, at the UNet's cross-attention width.
    assert [tuple(t.shape) for t in tokens] == [(2, 1, 4, 2048), (2, 1, 16, 2048)]


def test_real_image_encoder_gives_257_tokens_of_1280(character):
    with torch.no_grad():
        hidden_states = character.text_to_image.image_encoder(
            torch.empty(1, 3, 224, 224, device=META, dtype=DTYPE), output_hidden_states=True
        ).hidden_states
    assert hidden_states[-2].shape == (1, 257, VIT_H_WIDTH)


def test_real_vae_maps_1024_pixels_to_the_128_latent_and_back(character):
    vae = character.text_to_image.vae
    with torch.no_grad():
        latent = vae.encode(torch.empty(1, 3, 1024, 1024, device=META, dtype=DTYPE)).latent_dist.mean
        image = vae.decode(latent).sample
    assert latent.shape == (1, 4, 128, 128)
    assert image.shape == (1, 3, 1024, 1024)
