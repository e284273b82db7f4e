"""The generation stage: SDXL with its identity adapters, text-to-image and inpainting.

Owns loading one WeightsLayout into diffusers' SDXL pipeline with the identity adapter for human faces that
setup chose, PuLID v1.1 (its ID branch in every cross-attention, model/identity/pulid/) or IP-Adapter FaceID
Plus v2 (and its LoRA), beside IP-Adapter Plus, which carries a character's whole appearance when it has no
human face; the inpaint pipeline that shares its modules; and the per-request state of all of them.
Everything a request can change (scheduler, the adapters' scales, LoRA weights, the CLIP face tokens and
the shortcut, the ID tokens and their region) is set on every call, so one request never leaks into the
next. What a request asks is GenerationSettings (model/generation/settings.py); compilation is in
model/generation/compilation.py, the warm-up in model/generation/warm_up.py, the once-per-call image keys
and values in model/generation/image_kv_cache.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection
from PIL import Image

from model.generation import warm_up
from model.generation.compilation import CUDA_MODE, compile_unet, unet_is_compiled, use_compile_cache
from model.generation.decoding import to_pil
from model.generation.image_kv_cache import project_once_per_call
from model.generation.ip_adapter_scales import IPAdapterProcessors, set_ip_adapter_scales
from model.generation.loading import (  # noqa: F401 (attach_adapters: re-exported for the tests)
    apply_gpu_settings,
    attach_adapters,
    load_sdxl,
    pristine_device,
)
from model.generation.merged_loras import MergedLoras
from model.generation.prompt_encoding import encode_prompts
from model.generation.pulid_branch import attach_id_branches, load_pulid_attention, set_id_branches
from model.generation.settings import FaceCondition, GenerationSettings, IDTokens
from model.generation.speeds import TURBO_LORA_ADAPTER, SchedulerSpec
from model.options import FACEID, PULID
from model.weights.layout import (
    TURBO_LORA_FILE,
    WeightsLayout,
)

log = logging.getLogger(__name__)

# With FaceID, the two IP-Adapters in the order load_ip_adapter attaches them (the UNet's image projection
# layers, the attention processors' scale lists and ip_adapter_image_embeds all follow it); with PuLID, the
# appearance adapter alone, at index 0. diffusers names the LoRA that comes with IP-Adapter number i
# "faceid_{i}".
FACEID_ADAPTER_INDEX = 0
APPEARANCE_ADAPTER_INDEX = 1
PULID_APPEARANCE_ADAPTER_INDEX = 0
FACEID_LORA_ADAPTER = f"faceid_{FACEID_ADAPTER_INDEX}"

StepCallback = Callable[[int, int], None]
# The pristine copy of the LoRA-adapted weights (model/generation/merged_loras.py, 4.8 GiB at fp16) stays
# on a GPU with at least this much memory, where a switch is on-device copies; on a smaller one (24 GB: the
# production components and the activations leave no 4.8 GiB) it stays in pinned host memory, and a
# switch copies the changed layers over PCIe (about 0.1 s for all of them at 50 GB/s: a prediction).
PRISTINE_ON_GPU_MIN_GIB = 40.0


class CharacterPipeline:
    """SDXL + an identity adapter (PuLID v1.1 or FaceID Plus v2) + IP-Adapter Plus, loaded once;
    generate() runs one request on it."""

    def __init__(
        self,
        text_to_image: StableDiffusionXLPipeline,
        inpaint: StableDiffusionXLInpaintPipeline,
        device: torch.device,
        pulid_attention: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """pulid_attention: PuLID's `{index}.id_to_{k,v}.weight` tensors (split_checkpoint's second part)
        when PuLID is the identity adapter, in which case FaceID is not attached."""
        self.text_to_image = text_to_image
        self.inpaint = inpaint
        self.device = device
        self.identity_adapter = FACEID if pulid_attention is None else PULID
        self.appearance_index = (
            APPEARANCE_ADAPTER_INDEX if self.identity_adapter == FACEID else PULID_APPEARANCE_ADAPTER_INDEX
        )
        # The UNet's LoRAs, merged into its weights per request; taken from the peft adapters that
        # from_sdxl attached (which also unloads those), or empty for a UNet without LoRAs.
        pristine = pristine_device(device, PRISTINE_ON_GPU_MIN_GIB)
        self.loras = MergedLoras.take_from(text_to_image.unet, pristine)
        project_once_per_call(text_to_image.unet)
        # The IP-Adapter processors whose scales each request sets.
        self._ip_adapters = IPAdapterProcessors()
        # The image encoder's hidden states of a zero image, by (encoder, dtype, device, pixel shape).
        self._zero_image_tokens: dict[tuple, torch.Tensor] = {}
        # The cross-attentions that carry PuLID's ID branch (empty with FaceID).
        self.id_attentions = (
            attach_id_branches(text_to_image.unet, pulid_attention) if pulid_attention is not None else ()
        )
        # Kept from the folder's scheduler: each request gets a fresh scheduler built from it.
        self._scheduler_class = type(text_to_image.scheduler)
        self._scheduler_config = text_to_image.scheduler.config

    @classmethod
    def load(
        cls,
        layout: WeightsLayout,
        device: torch.device,
        dtype: torch.dtype,
        compile: bool = False,
        identity_adapter: str = PULID,
        compile_cache_dir: Path | None = None,
    ) -> CharacterPipeline:
        """Load the folder's weights with the identity adapter for faces ("pulid" or "faceid"); on CUDA
        apply the GPU settings, and compile when asked (CHARACTER_TORCH_COMPILE, on by default; the caller
        then runs warm_up() before serving: CharacterService.load does), with the compile cache in the
        weights folder (or compile_cache_dir, an operator's). `compile` is ignored on the CPU."""
        if identity_adapter not in (PULID, FACEID):
            raise ValueError(f"identity_adapter must be {PULID!r} or {FACEID!r}, got {identity_adapter!r}")
        text_to_image = load_sdxl(layout, device, dtype)
        pulid = identity_adapter == PULID
        character = cls.from_sdxl(
            text_to_image,
            None if pulid else layout.faceid_adapter,
            layout.appearance_adapter,
            device,
            dtype,
            turbo_lora=layout.turbo_lora_file,
            pulid_attention=load_pulid_attention(layout.pulid_adapter) if pulid else None,
        )
        if device.type == "cuda":
            # After the adapters are attached, so that their layers get the same treatment.
            apply_gpu_settings(character.text_to_image)
            if compile:
                use_compile_cache(layout.root, compile_cache_dir)
                character.compile(mode=CUDA_MODE)
        return character

    def compile(self, backend: str = "inductor", mode: str | None = None, **options) -> None:
        """Compile the UNet, shared by both pipelines (model/generation/compilation.py); run warm_up() next.
        backend, mode and options (dynamic): compile_unet's."""
        compile_unet(self.text_to_image.unet, backend=backend, mode=mode, **options)

    @property
    def compiled(self) -> bool:
        """Whether the UNet runs compiled (False before compile(), and after a compile error)."""
        return unet_is_compiled(self.text_to_image.unet)

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
        faceid_checkpoint: Path | dict[str, dict[str, torch.Tensor]] | None,
        appearance_checkpoint: Path | dict[str, dict[str, torch.Tensor]],
        device: torch.device,
        dtype: torch.dtype,
        turbo_lora: Path | dict[str, torch.Tensor] | None = None,
        pulid_attention: dict[str, torch.Tensor] | None = None,
    ) -> CharacterPipeline:
        """Attach the identity adapter, FaceID Plus v2 (faceid_checkpoint: its file or state dict) or
        PuLID (pulid_attention: its ID attention tensors), exactly one of them, and IP-Adapter Plus to an
        SDXL pipeline that has an image encoder, and the Turbo speed's distilled LoRA (its file or state
        dict) when given.

        Separate from load() so that the real-size wiring test attaches real-shape checkpoints to
        empty real-size modules through this same code.
        """
        if (faceid_checkpoint is None) == (pulid_attention is None):
            raise ValueError("attach exactly one identity adapter: a FaceID checkpoint or PuLID's attention")
        attach_adapters(text_to_image, faceid_checkpoint, appearance_checkpoint, turbo_lora)
        # from_pipe casts the shared modules to its dtype argument (float32 by default), so pass ours.
        inpaint = StableDiffusionXLInpaintPipeline.from_pipe(text_to_image, dtype=dtype)
        for pipe in (text_to_image, inpaint):
            # Progress goes to on_step (the server's metrics and log lines), not to tqdm bars on stderr.
            pipe.set_progress_bar_config(disable=True)
        # The constructor takes the LoRAs (peft adapters until then) into MergedLoras.
        return cls(text_to_image, inpaint, device, pulid_attention=pulid_attention)

    @property
    def faceid_projection(self) -> IPAdapterFaceIDPlusImageProjection:
        if self.identity_adapter != FACEID:
            raise ValueError("FaceID is not loaded: this pipeline's identity adapter is PuLID")
        return self.text_to_image.unet.encoder_hid_proj.image_projection_layers[FACEID_ADAPTER_INDEX]

    def generate(self, settings: GenerationSettings, on_step: StepCallback | None = None) -> Image.Image:
        """Run one request; on_step(step, total) is called after each denoising step (step from 1).

        Without a face (settings.face None) the FaceID adapter and its LoRA are off, and
        settings.appearance_image carries the character.
        """
        pipe, inputs = self.prepare(settings, on_step)
        # "pt": the decoded image in [0, 1], still on the device; to_pil makes the bytes there.
        return to_pil(pipe(**inputs, output_type="pt").images[0])

    @torch.no_grad()
    def prepare(
        self, settings: GenerationSettings, on_step: StepCallback | None = None
    ) -> tuple[StableDiffusionXLPipeline | StableDiffusionXLInpaintPipeline, dict[str, Any]]:
        """Set every piece of per-request state; return the pipeline to call and its arguments.

        Everything but the denoising loop: the real-size wiring test runs this on empty weights.
        """
        self._check_face(settings)
        pipe = self.inpaint if settings.inpainting else self.text_to_image
        unet = pipe.unet
        # The same condition as the pipelines' own do_classifier_free_guidance.
        guided = settings.guidance_scale > 1.0 and unet.config.time_cond_proj_dim is None

        pipe.scheduler = self._scheduler(settings.scheduler)
        # One scale per adapter; diffusers' attention skips an adapter whose scale is 0.
        scales = [0.0] * len(unet.encoder_hid_proj.image_projection_layers)
        scales[self.appearance_index] = settings.adapters.appearance
        if self.identity_adapter == FACEID:
            scales[FACEID_ADAPTER_INDEX] = settings.adapters.ip_adapter
        set_ip_adapter_scales(self._ip_adapter_processors(unet), scales)
        self._set_loras(settings)
        # The image tokens are projected once per pipeline call (model/generation/image_kv_cache.py).
        unet.encoder_hid_proj.forget()
        image_embeds = self._image_embeds(pipe, settings, guided)
        self._set_id_branches(settings, guided)

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

    def _ip_adapter_processors(self, unet) -> tuple:
        """The UNet's IP-Adapter attention processors, found once (model/generation/ip_adapter_scales.py)."""
        return self._ip_adapters.processors(unet)

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
        weights = {TURBO_LORA_ADAPTER: settings.turbo_lora_scale}
        if self.identity_adapter == FACEID:
            weights[FACEID_LORA_ADAPTER] = settings.adapters.faceid_lora
        self.loras.use(weights)

    def _check_face(self, settings: GenerationSettings) -> None:
        """A face for the adapter that is loaded: a caller's mistake otherwise, not a user's."""
        face = settings.face
        if isinstance(face, FaceCondition) and self.identity_adapter != FACEID:
            raise ValueError("a FaceID face was given, but this pipeline's identity adapter is PuLID")
        if isinstance(face, IDTokens) and self.identity_adapter != PULID:
            raise ValueError("PuLID ID tokens were given, but this pipeline's identity adapter is FaceID")

    def _image_embeds(self, pipe, settings: GenerationSettings, guided: bool) -> list[torch.Tensor]:
        """ip_adapter_image_embeds, one entry per attached IP-Adapter; sets FaceID's CLIP face tokens.

        Every adapter's projection runs (once per call), so each gets tokens; an unused one gets zeros
        (its attention is skipped at scale 0) instead of an image encoder pass.
        """
        dtype = pipe.unet.dtype
        face = settings.face if isinstance(settings.face, FaceCondition) else None
        embeds: list[torch.Tensor] = [None] * len(pipe.unet.encoder_hid_proj.image_projection_layers)
        embeds[self.appearance_index] = (
            self._clip_tokens(pipe, settings.appearance_image, guided)
            if settings.appearance_image is not None
            else self._zero_clip_tokens(pipe, guided)
        ).to(dtype)
        if self.identity_adapter == FACEID:
            projection = self.faceid_projection
            projection.clip_embeds = (
                self._clip_tokens(pipe, face.face_crop, guided)
                if face is not None
                else self._zero_clip_tokens(pipe, guided)
            ).to(dtype)
            # FaceID Plus v2 adds the CLIP structure branch onto the ID tokens ("shortcut"); v1 replaced them.
            projection.shortcut = True
            projection.shortcut_scale = settings.adapters.face_structure
            embeds[FACEID_ADAPTER_INDEX] = self._id_embeds(
                face.embedding if face is not None else None, dtype, guided
            )
        return embeds

    def _set_id_branches(self, settings: GenerationSettings, guided: bool) -> None:
        set_id_branches(self.text_to_image.unet, self.id_attentions, settings, guided, self.device)

    @property
    def id_token_width(self) -> int | None:
        """The width of the ID tokens PuLID's attention takes (2048 in v1.1); None with FaceID."""
        if not self.id_attentions:
            return None
        return self.id_attentions[0].processor.id_branch.id_to_k.in_features

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

    def _zero_clip_tokens(self, pipe, guided: bool) -> torch.Tensor:
        """Zeros shaped as the image encoder's hidden states, (batch, 1, tokens, width), for an unused
        adapter."""
        config = pipe.image_encoder.config
        tokens = (config.image_size // config.patch_size) ** 2 + 1
        return torch.zeros(2 if guided else 1, 1, tokens, config.hidden_size, device=self.device)

    def _clip_tokens(self, pipe, image: Image.Image, guided: bool) -> torch.Tensor:
        """The image encoder's penultimate hidden states of an image, (batch, 1, 257, width).

        Both adapters read hidden states (not the pooled embedding). With guidance the unconditional half
        (the encoding of a zero image) comes first, as prepare_ip_adapter_image_embeds lays it out.
        diffusers' encode_image(image, device, 1, True) computes the same, but it also encodes the zero
        image on every call: that encoding never changes, so it is kept (_unconditional_clip_tokens).
        """
        encoder = pipe.image_encoder
        pixels = pipe.feature_extractor(image.convert("RGB"), return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.device, dtype=next(encoder.parameters()).dtype)
        tokens = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        if guided:
            tokens = torch.cat([self._unconditional_clip_tokens(encoder, pixels), tokens])
        return tokens[:, None]

    def _unconditional_clip_tokens(self, encoder, pixels: torch.Tensor) -> torch.Tensor:
        """The penultimate hidden states of the zero image shaped as `pixels`, encoded once per image
        encoder, dtype and device (both pipelines share one encoder: one entry), as encode_image encodes
        it: torch.zeros_like(pixels) through the same encoder, so the values are identical."""
        key = (encoder, pixels.dtype, pixels.device, tuple(pixels.shape))
        tokens = self._zero_image_tokens.get(key)
        if tokens is None:
            hidden_states = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states
            tokens = self._zero_image_tokens[key] = hidden_states[-2]
        return tokens


def build_scheduler(spec: SchedulerSpec, config):
    """A new scheduler of the speed's solver (SchedulerSpec) on a folder's noise-schedule config."""
    return getattr(diffusers, spec.class_name).from_config(config, **spec.options)
