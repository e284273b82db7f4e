"""The generation stage: SDXL with two image adapters, text-to-image and inpainting.

Owns loading one WeightsLayout into diffusers' SDXL pipeline with IP-Adapter FaceID Plus v2 (and its LoRA),
which carries a human face, and IP-Adapter Plus, which carries a character's whole appearance when it has
no human face; the inpaint pipeline that shares its modules; and the per-request state of both. Everything
a request can change (scheduler, both adapters' scales, LoRA weights, the CLIP face tokens and the
shortcut) is set on every call, so one request never leaks into the next. What a request asks is
GenerationSettings (model/generation/settings.py); compilation and warm-up are in model/generation/warm_up.py,
the once-per-call image keys and values in model/generation/image_kv_cache.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection
from PIL import Image
from transformers import CLIPVisionModelWithProjection

from model.generation import warm_up
from model.generation.image_kv_cache import project_once_per_call
from model.generation.merged_loras import MergedLoras
from model.generation.prompt_encoding import encode_prompts
from model.generation.settings import GenerationSettings
from model.generation.speeds import TURBO_LORA_ADAPTER, SchedulerSpec
from model.weights.layout import (
    APPEARANCE_ADAPTER_FILE,
    FACEID_ADAPTER_FILE,
    SDXL_VARIANT,
    TURBO_LORA_FILE,
    WeightsLayout,
)

log = logging.getLogger(__name__)

# The two IP-Adapters, in the order load_ip_adapter attaches them (the UNet's image projection layers,
# the attention processors' scale lists and ip_adapter_image_embeds all follow it). diffusers names the LoRA
# that comes with IP-Adapter number i "faceid_{i}".
FACEID_ADAPTER_INDEX = 0
APPEARANCE_ADAPTER_INDEX = 1
FACEID_LORA_ADAPTER = f"faceid_{FACEID_ADAPTER_INDEX}"

StepCallback = Callable[[int, int], None]
# The pristine copy of the LoRA-adapted weights (model/generation/merged_loras.py, 4.8 GiB at fp16) stays
# on a GPU with at least this much memory, where a switch is on-device copies; on a smaller one (24 GB: the
# production components and the activations leave no 4.8 GiB) it stays in pinned host memory, and a
# switch copies the changed layers over PCIe (about 0.1 s for all of them at 50 GB/s: a prediction).
PRISTINE_ON_GPU_MIN_GIB = 40.0


class CharacterPipeline:
    """SDXL + FaceID Plus v2 loaded once; generate() runs one request on it."""

    # True once compile() has run.
    compiled = False

    def __init__(
        self,
        text_to_image: StableDiffusionXLPipeline,
        inpaint: StableDiffusionXLInpaintPipeline,
        device: torch.device,
    ) -> None:
        self.text_to_image = text_to_image
        self.inpaint = inpaint
        self.device = device
        # The UNet's LoRAs, merged into its weights per request; taken from the peft adapters that
        # from_sdxl attached (which also unloads those), or empty for a UNet without LoRAs.
        self.loras = MergedLoras.take_from(text_to_image.unet, _pristine_device(device))
        project_once_per_call(text_to_image.unet)
        # Kept from the folder's scheduler: each request gets a fresh scheduler built from it.
        self._scheduler_class = type(text_to_image.scheduler)
        self._scheduler_config = text_to_image.scheduler.config

    @classmethod
    def load(
        cls, layout: WeightsLayout, device: torch.device, dtype: torch.dtype, compile: bool = False
    ) -> CharacterPipeline:
        """Load the folder's weights; on CUDA apply the GPU settings, and compile when asked
        (CHARACTER_TORCH_COMPILE=1; the caller then runs warm_up() before serving: CharacterService.load
        does). `compile` is ignored on the CPU."""
        text_to_image = load_sdxl(layout, device, dtype)
        character = cls.from_sdxl(
            text_to_image,
            layout.faceid_adapter,
            layout.appearance_adapter,
            device,
            dtype,
            turbo_lora=layout.turbo_lora_file,
        )
        if device.type == "cuda":
            # After the adapters are attached, so that their layers get the same treatment.
            apply_gpu_settings(character.text_to_image)
            if compile:
                character.compile()
        return character

    def compile(self, backend: str = "inductor") -> None:
        """Compile the UNet's transformer blocks (model/generation/warm_up.py); run warm_up() next."""
        warm_up.compile_transformer_blocks(self, backend)

    def warm_up(
        self,
        sizes: tuple[tuple[int, int], ...] = warm_up.WARM_UP_SIZES,
        steps: int = warm_up.WARM_UP_STEPS,
        appearance_with_face: float = 0.0,
    ) -> warm_up.WarmUp:
        """Every speed, path and mode once, so that no request compiles (model/generation/warm_up.py)."""
        return warm_up.warm_up(self, sizes, steps, appearance_with_face)

    @classmethod
    def from_sdxl(
        cls,
        text_to_image: StableDiffusionXLPipeline,
        faceid_checkpoint: Path | dict[str, dict[str, torch.Tensor]],
        appearance_checkpoint: Path | dict[str, dict[str, torch.Tensor]],
        device: torch.device,
        dtype: torch.dtype,
        turbo_lora: Path | dict[str, torch.Tensor] | None = None,
    ) -> CharacterPipeline:
        """Attach FaceID Plus v2 and IP-Adapter Plus (each its file, or its state dict) to an SDXL pipeline
        that has an image encoder, and the Turbo speed's distilled LoRA (its file or state dict) when given.

        Separate from load() so that the real-size wiring test attaches real-shape checkpoints to
        empty real-size modules through this same code.
        """
        attach_adapters(text_to_image, faceid_checkpoint, appearance_checkpoint, turbo_lora)
        # from_pipe casts the shared modules to its dtype argument (float32 by default), so pass ours.
        inpaint = StableDiffusionXLInpaintPipeline.from_pipe(text_to_image, dtype=dtype)
        for pipe in (text_to_image, inpaint):
            # Progress goes to on_step (the server's metrics and log lines), not to tqdm bars on stderr.
            pipe.set_progress_bar_config(disable=True)
        # The constructor takes both LoRAs (peft adapters until then) into MergedLoras.
        return cls(text_to_image, inpaint, device)

    @property
    def faceid_projection(self) -> IPAdapterFaceIDPlusImageProjection:
        return self.text_to_image.unet.encoder_hid_proj.image_projection_layers[FACEID_ADAPTER_INDEX]

    def generate(self, settings: GenerationSettings, on_step: StepCallback | None = None) -> Image.Image:
        """Run one request; on_step(step, total) is called after each denoising step (step from 1).

        Without a face (settings.face None) the FaceID adapter and its LoRA are off, and
        settings.appearance_image carries the character.
        """
        pipe, inputs = self.prepare(settings, on_step)
        return pipe(**inputs, output_type="pil").images[0]

    @torch.no_grad()
    def prepare(
        self, settings: GenerationSettings, on_step: StepCallback | None = None
    ) -> tuple[StableDiffusionXLPipeline | StableDiffusionXLInpaintPipeline, dict[str, Any]]:
        """Set every piece of per-request state; return the pipeline to call and its arguments.

        Everything but the denoising loop: the real-size wiring test runs this on empty weights.
        """
        face = settings.face
        has_face = face is not None
        pipe = self.inpaint if settings.inpainting else self.text_to_image
        unet = pipe.unet
        # The same condition as the pipelines' own do_classifier_free_guidance.
        guided = settings.guidance_scale > 1.0 and unet.config.time_cond_proj_dim is None

        pipe.scheduler = self._scheduler(settings.scheduler)
        # One scale per adapter; diffusers' attention skips an adapter whose scale is 0.
        scales = [0.0, 0.0]
        scales[FACEID_ADAPTER_INDEX] = settings.adapters.ip_adapter
        scales[APPEARANCE_ADAPTER_INDEX] = settings.adapters.appearance
        pipe.set_ip_adapter_scale(scales)
        self._set_loras(settings)
        # The image tokens are projected once per pipeline call (model/generation/image_kv_cache.py).
        unet.encoder_hid_proj.forget()
        # Every adapter's projection runs on every step, so each gets tokens; an unused one gets zeros
        # (its attention is skipped at scale 0) instead of an image encoder pass.
        face_tokens = self._clip_tokens(pipe, face.face_crop, guided) if has_face else None
        appearance_tokens = (
            self._clip_tokens(pipe, settings.appearance_image, guided)
            if settings.appearance_image is not None
            else None
        )
        some_tokens = face_tokens if face_tokens is not None else appearance_tokens
        projection = self.faceid_projection
        projection.clip_embeds = (face_tokens if has_face else torch.zeros_like(some_tokens)).to(unet.dtype)
        # FaceID Plus v2 adds the CLIP structure branch onto the ID tokens ("shortcut"); v1 replaced them.
        projection.shortcut = True
        projection.shortcut_scale = settings.adapters.face_structure
        image_embeds: list[torch.Tensor] = [None, None]
        image_embeds[FACEID_ADAPTER_INDEX] = self._id_embeds(
            face.embedding if has_face else None, unet.dtype, guided
        )
        image_embeds[APPEARANCE_ADAPTER_INDEX] = (
            appearance_tokens if appearance_tokens is not None else torch.zeros_like(some_tokens)
        ).to(unet.dtype)

        callback = None
        if on_step is not None:

            def callback(pipeline, step: int, timestep, tensors: dict) -> dict:
                on_step(step + 1, pipeline.num_timesteps)
                return tensors

        inputs = dict(
            # Encoded here rather than by the pipeline, which would cut both prompts at 77 tokens.
            **encode_prompts(pipe, settings.prompt, settings.negative_prompt, self.device).as_kwargs(),
            width=settings.width,
            height=settings.height,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            ip_adapter_image_embeds=image_embeds,
            # A CPU generator gives the same noise for the same seed on every device.
            generator=torch.Generator("cpu").manual_seed(settings.seed),
            callback_on_step_end=callback,
        )
        if settings.inpainting:
            inputs |= dict(
                image=settings.init_image, mask_image=settings.mask_image, strength=settings.strength
            )
        return pipe, inputs

    def _scheduler(self, spec: SchedulerSpec | None):
        """A fresh scheduler per request (schedulers keep step state), on the folder's noise schedule."""
        if spec is None:
            return self._scheduler_class.from_config(self._scheduler_config)
        return build_scheduler(spec, self._scheduler_config)

    @property
    def has_turbo_lora(self) -> bool:
        return TURBO_LORA_ADAPTER in self.loras.adapters

    def _set_loras(self, settings: GenerationSettings) -> None:
        """Merge exactly this request's LoRAs at its weights into the UNet (shared by both pipelines).

        Called on every request; the weights change only when the set differs from the merged one (the
        path, the speed, and the style's FaceID LoRA factor decide it). An adapter at weight 0 is left
        out: the base weights, not a zero delta.
        """
        if settings.turbo_lora_scale and not self.has_turbo_lora:
            raise ValueError(f"the turbo LoRA is not loaded (expected {TURBO_LORA_FILE})")
        self.loras.use(
            {
                FACEID_LORA_ADAPTER: settings.adapters.faceid_lora,
                TURBO_LORA_ADAPTER: settings.turbo_lora_scale,
            }
        )

    def _id_embeds(
        self, identity_embedding: np.ndarray | None, dtype: torch.dtype, guided: bool
    ) -> torch.Tensor:
        """The ArcFace embedding as diffusers' ip_adapter_image_embeds entry: (batch, images=1, 1, 512).

        With guidance the batch is [unconditional, conditional], and the unconditional ID is zeros, as in
        IP-Adapter FaceID and diffusers' documented usage. Without a face, both are zeros.
        """
        if identity_embedding is None:
            # The projection's input width: 512, ArcFace's embedding.
            identity_embedding = np.zeros(self.faceid_projection.proj.net[0].proj.in_features, np.float32)
        embedding = torch.from_numpy(np.asarray(identity_embedding, dtype=np.float32))
        if embedding.ndim != 1:
            raise ValueError(f"identity_embedding must be one vector, got shape {tuple(embedding.shape)}")
        embeds = embedding.reshape(1, 1, 1, -1)
        if guided:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
        return embeds.to(device=self.device, dtype=dtype)

    def _clip_tokens(self, pipe, image: Image.Image, guided: bool) -> torch.Tensor:
        """The image encoder's penultimate hidden states of an image, (batch, 1, 257, width).

        Both adapters read hidden states (not the pooled embedding). With guidance the unconditional half
        (the encoding of a zero image) comes first, as prepare_ip_adapter_image_embeds lays it out.
        """
        tokens, unconditional = pipe.encode_image(image.convert("RGB"), self.device, 1, True)
        if guided:
            tokens = torch.cat([unconditional, tokens])
        return tokens[:, None]


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


def build_scheduler(spec: SchedulerSpec, config):
    """A new scheduler of the speed's solver (SchedulerSpec) on a folder's noise-schedule config."""
    return getattr(diffusers, spec.class_name).from_config(config, **spec.options)


def _pristine_device(device: torch.device) -> torch.device:
    """Where the pristine copy of the LoRA-adapted weights lives (see PRISTINE_ON_GPU_MIN_GIB)."""
    if device.type != "cuda":
        return device
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30  # GPU only
    return device if total_gib >= PRISTINE_ON_GPU_MIN_GIB else torch.device("cpu")


def attach_adapters(
    text_to_image: StableDiffusionXLPipeline,
    faceid_checkpoint: Path | dict[str, dict[str, torch.Tensor]],
    appearance_checkpoint: Path | dict[str, dict[str, torch.Tensor]],
    turbo_lora: Path | dict[str, torch.Tensor] | None = None,
) -> None:
    """Load both IP-Adapters into the pipeline with diffusers' loaders, and the LoRAs into its UNet as peft
    adapters (FACEID_LORA_ADAPTER, TURBO_LORA_ADAPTER), unmerged: the state CharacterPipeline starts from,
    and the unmerged reference that tests compare the merged weights with."""
    sources, weight_names = [], []
    for checkpoint, file_name in (
        (faceid_checkpoint, FACEID_ADAPTER_FILE),
        (appearance_checkpoint, APPEARANCE_ADAPTER_FILE),
    ):
        # A .bin goes through diffusers' load_state_dict, which uses torch.load(weights_only=True).
        is_file = isinstance(checkpoint, Path)
        sources.append(str(checkpoint.parent) if is_file else checkpoint)
        weight_names.append(checkpoint.name if is_file else file_name)
    # Both adapters in one call: a second call would replace the first. The image encoder is already
    # registered, so image_encoder_folder=None loads nothing more. This also loads FaceID's LoRA into
    # the UNet, as the peft adapter FACEID_LORA_ADAPTER.
    text_to_image.load_ip_adapter(
        sources, subfolder=["", ""], weight_name=weight_names, image_encoder_folder=None
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
