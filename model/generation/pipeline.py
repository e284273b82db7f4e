"""The generation stage: SDXL with two image adapters, text-to-image and inpainting.

Owns loading one WeightsLayout into diffusers' SDXL pipeline with IP-Adapter FaceID Plus v2 (and its LoRA),
which carries a human face, and IP-Adapter Plus, which carries a character's whole appearance when it has
no human face; the inpaint pipeline that shares its modules; and the per-request state of both. Everything
a request can change (scheduler, both adapters' scales, LoRA weights, the CLIP face tokens and the
shortcut) is set on every call, so one request never leaks into the next.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection, MultiIPAdapterImageProjection
from PIL import Image
from transformers import CLIPVisionModelWithProjection

from model.generation.merged_loras import MergedLoras
from model.generation.prompt_encoding import encode_prompts
from model.generation.speeds import SPEEDS, TURBO_LORA_ADAPTER, SchedulerSpec
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
# Set to 1 to compile the UNet's transformer blocks with torch.compile on a CUDA GPU, at setup (see
# CharacterPipeline.compile and warm_up): no request compiles.
COMPILE_ENV = "CHARACTER_TORCH_COMPILE"
# Compiled graphs per code object that dynamo keeps before it gives up (its default is 8, and with
# fullgraph=True a request beyond it would fail). SDXL's BasicTransformerBlock has two widths (640, 1280),
# and each width has a graph per path (which IP-Adapter scales are 0), per batch (1 without CFG, 2 with)
# and a static and a dynamic-shape variant (the tiny profile's warm-up makes 16). warm_up() makes them all.
RECOMPILE_LIMIT = 64
# Two sizes, two prompt lengths and two values of every adapter scale during the warm-up: dynamo compiles
# the first call of a graph for its exact shapes and scale values, and on the first change marks those
# dimensions and floats dynamic; after the warm-up no size, prompt length or scale recompiles.
WARM_UP_SIZES = ((1024, 1024), (1152, 896))
WARM_UP_PROMPTS = ("a portrait photo of a character", " ".join(["a detailed photo of a character"] * 20))
WARM_UP_SCALE_FACTORS = (1.0, 0.5)
# Denoising steps per warm-up run: every step calls the same graphs.
WARM_UP_STEPS = 2
# The pristine copy of the LoRA-adapted weights (model/generation/merged_loras.py, 4.8 GiB at fp16) stays
# on a GPU
# with at least this much memory, where a switch is on-device copies; on a smaller one (24 GB: the
# production components and the activations leave no 4.8 GiB) it stays in pinned host memory, and a
# switch copies the changed layers over PCIe (about 0.1 s for all of them at 50 GB/s: a prediction).
PRISTINE_ON_GPU_MIN_GIB = 40.0


@dataclass(frozen=True)
class GenerationSettings:
    """One request, as the pipeline runs it: text-to-image, or inpainting when init_image is set."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    seed: int
    num_inference_steps: int
    guidance_scale: float
    # FaceID Plus v2 scales: the ID tokens' attention weight, the weight of the adapter's LoRA, and the
    # weight of the CLIP face-structure branch added to the ID tokens (the authors' "s_scale").
    ip_adapter_scale: float = 1.0
    faceid_lora_scale: float = 1.0
    face_structure_scale: float = 1.0
    # The solver; None runs the scheduler of the weights folder with its own config.
    scheduler: SchedulerSpec | None = None
    # Weight of the few-step distilled LoRA; at 0 that adapter is inactive.
    turbo_lora_scale: float = 0.0
    # IP-Adapter Plus: the image whose appearance it carries (RGB, any size) and its attention weight.
    appearance_image: Image.Image | None = None
    appearance_scale: float = 0.0
    # Inpainting: the image and mask at (width, height); the mask is "L", WHITE = repaint.
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    strength: float = 1.0

    def __post_init__(self) -> None:
        # The request stage validates user input; these guard the pipeline against a caller's mistake.
        if (self.init_image is None) != (self.mask_image is None):
            raise ValueError("init_image and mask_image must be given together")
        for name, image in (("init_image", self.init_image), ("mask_image", self.mask_image)):
            if image is not None and image.size != (self.width, self.height):
                raise ValueError(
                    f"{name} is {image.size}, expected the working size {(self.width, self.height)}"
                )
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.appearance_scale and self.appearance_image is None:
            raise ValueError("appearance_scale is set but appearance_image is not")

    @property
    def inpainting(self) -> bool:
        return self.init_image is not None


@dataclass(frozen=True)
class WarmUp:
    """What CharacterPipeline.warm_up ran: pipeline calls, wall seconds, and the graphs dynamo compiled
    (0 when the UNet is not compiled)."""

    runs: int
    seconds: float
    compiled: bool
    graphs: int


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
        _project_once_per_request(text_to_image.unet)
        # Kept from the folder's scheduler: each request gets a fresh scheduler built from it.
        self._scheduler_class = type(text_to_image.scheduler)
        self._scheduler_config = text_to_image.scheduler.config

    @classmethod
    def load(cls, layout: WeightsLayout, device: torch.device, dtype: torch.dtype) -> CharacterPipeline:
        """Load the folder's weights; on CUDA apply the GPU settings, and compile when COMPILE_ENV=1
        (the caller then runs warm_up() before serving: CharacterService.load does)."""
        text_to_image = StableDiffusionXLPipeline.from_pretrained(
            layout.sdxl,
            vae=AutoencoderKL.from_pretrained(layout.vae, dtype=dtype),
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(layout.image_encoder, dtype=dtype),
            variant=SDXL_VARIANT,
            dtype=dtype,
            # The output must not depend on whether the optional invisible-watermark package is installed.
            add_watermarker=False,
        ).to(device)
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
            if os.environ.get(COMPILE_ENV) == "1":
                character.compile()
        return character

    def compile(self, backend: str = "inductor") -> None:
        """Regional compilation: each of the UNet's transformer blocks is compiled (diffusers'
        compile_repeated_blocks, torch.compile's default mode), the rest runs eagerly.

        The blocks of one width share their graphs, so compiling takes seconds rather than the minutes
        of the whole UNet. Nothing compiles here: the first calls do, so run warm_up() before serving.
        The merged LoRA weights are plain parameter values, so switching them recompiles nothing.
        backend: torch.compile's ("eager" or "aot_eager" trace without generating code, for tests).
        """
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        # In place: the inpaint pipeline (from_pipe) holds the same UNet object, so it runs compiled too.
        self.text_to_image.unet.compile_repeated_blocks(fullgraph=True, backend=backend)
        self.compiled = True
        log.info("UNet transformer blocks set to compile (torch.compile, backend %s) at warm-up", backend)

    def warm_up(
        self,
        sizes: tuple[tuple[int, int], ...] = WARM_UP_SIZES,
        steps: int = WARM_UP_STEPS,
        appearance_with_face: float = 0.0,
    ) -> WarmUp:
        """Run every speed on every path (face, appearance, and face with appearance when configured),
        text-to-image and inpainting, so that no request pays for compilation or first-call work.

        Two rounds: the second at another size, with a longer prompt and other adapter scales, so that
        a compiled graph takes any size, prompt length and scale afterwards (see WARM_UP_SIZES). On an
        uncompiled pipeline it still does the first-call work (CUDA kernels and the allocator's pool).
        steps: denoising steps per run (each step calls the same graphs). Returns what it ran and took.
        """
        from torch._dynamo.utils import counters

        graphs_before = counters["stats"]["unique_graphs"]
        started = time.perf_counter()
        runs = 0
        for identity, crop, settings in warm_up_requests(sizes, steps, appearance_with_face):
            self.generate(identity, crop, settings)
            runs += 1
        result = WarmUp(
            runs=runs,
            seconds=time.perf_counter() - started,
            compiled=self.compiled,
            graphs=counters["stats"]["unique_graphs"] - graphs_before,
        )
        log.info(
            "Warm-up: %d runs (every speed, path, text-to-image and inpainting) in %.1f s; compiled %s, "
            "%d new graphs",
            result.runs,
            result.seconds,
            result.compiled,
            result.graphs,
        )
        return result

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

    def generate(
        self,
        identity_embedding: np.ndarray | None,
        face_crop: Image.Image | None,
        settings: GenerationSettings,
        on_step: StepCallback | None = None,
    ) -> Image.Image:
        """Run one request; on_step(step, total) is called after each denoising step (step from 1).

        Without a face (identity_embedding and face_crop None) the FaceID adapter and its LoRA are off,
        and settings.appearance_image carries the character.
        """
        pipe, inputs = self.prepare(identity_embedding, face_crop, settings, on_step)
        return pipe(**inputs, output_type="pil").images[0]

    @torch.no_grad()
    def prepare(
        self,
        identity_embedding: np.ndarray | None,
        face_crop: Image.Image | None,
        settings: GenerationSettings,
        on_step: StepCallback | None = None,
    ) -> tuple[StableDiffusionXLPipeline | StableDiffusionXLInpaintPipeline, dict[str, Any]]:
        """Set every piece of per-request state; return the pipeline to call and its arguments.

        Everything but the denoising loop: the real-size wiring test runs this on empty weights.
        """
        has_face = identity_embedding is not None
        if has_face != (face_crop is not None):
            raise ValueError("identity_embedding and face_crop must be given together")
        if not has_face and (settings.ip_adapter_scale or settings.faceid_lora_scale):
            raise ValueError("without a face, ip_adapter_scale and faceid_lora_scale must be 0")
        if not has_face and settings.appearance_image is None:
            raise ValueError("a request needs a face (embedding and crop) or an appearance_image")
        pipe = self.inpaint if settings.inpainting else self.text_to_image
        unet = pipe.unet
        # The same condition as the pipelines' own do_classifier_free_guidance.
        guided = settings.guidance_scale > 1.0 and unet.config.time_cond_proj_dim is None

        pipe.scheduler = self._scheduler(settings.scheduler)
        # One scale per adapter; diffusers' attention skips an adapter whose scale is 0.
        scales = [0.0, 0.0]
        scales[FACEID_ADAPTER_INDEX] = settings.ip_adapter_scale
        scales[APPEARANCE_ADAPTER_INDEX] = settings.appearance_scale
        pipe.set_ip_adapter_scale(scales)
        self._set_loras(settings)
        # The image tokens are projected once per pipeline call (see _project_once_per_request).
        unet.encoder_hid_proj.forget()
        # Every adapter's projection runs on every step, so each gets tokens; an unused one gets zeros
        # (its attention is skipped at scale 0) instead of an image encoder pass.
        face_tokens = self._clip_tokens(pipe, face_crop, guided) if has_face else None
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
        projection.shortcut_scale = settings.face_structure_scale
        image_embeds: list[torch.Tensor] = [None, None]
        image_embeds[FACEID_ADAPTER_INDEX] = self._id_embeds(identity_embedding, unet.dtype, guided)
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
        return getattr(diffusers, spec.class_name).from_config(self._scheduler_config, **spec.options)

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
            {FACEID_LORA_ADAPTER: settings.faceid_lora_scale, TURBO_LORA_ADAPTER: settings.turbo_lora_scale}
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


def _pristine_device(device: torch.device) -> torch.device:
    """Where the pristine copy of the LoRA-adapted weights lives (see PRISTINE_ON_GPU_MIN_GIB)."""
    if device.type != "cuda":
        return device
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30  # GPU only
    return device if total_gib >= PRISTINE_ON_GPU_MIN_GIB else torch.device("cpu")


def warm_up_requests(
    sizes: tuple[tuple[int, int], ...], steps: int, appearance_with_face: float
) -> list[tuple[np.ndarray | None, Image.Image | None, GenerationSettings]]:
    """The warm-up's requests, as generate() arguments: per round (a size, a prompt, a scale factor),
    every speed x path (face, appearance, face with appearance when configured) x text-to-image and
    inpainting, at the speed's schedule cut to `steps` steps."""
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal(512).astype(np.float32)
    embedding /= np.linalg.norm(embedding)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB")
    # (identity embedding, face crop, appearance image, appearance scale or None for the speed's) per path.
    paths = [(embedding, image, None, None), (None, None, image, None)]
    if appearance_with_face:
        paths.append((embedding, image, image, appearance_with_face))
    requests = []
    for index, (width, height) in enumerate(sizes):
        factor = WARM_UP_SCALE_FACTORS[index % len(WARM_UP_SCALE_FACTORS)]
        mask = Image.new("L", (width, height), 0)
        mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
        for speed in SPEEDS.values():
            for identity, crop, appearance, appearance_scale in paths:
                face = 1.0 if identity is not None else 0.0
                base = speed.appearance_scale
                settings = GenerationSettings(
                    prompt=WARM_UP_PROMPTS[index % len(WARM_UP_PROMPTS)],
                    negative_prompt="blurry",
                    width=width,
                    height=height,
                    seed=len(requests),
                    **(speed.schedule() | {"num_inference_steps": min(steps, speed.num_inference_steps)}),
                    ip_adapter_scale=speed.ip_adapter_scale * factor * face,
                    faceid_lora_scale=speed.faceid_lora_scale * factor * face,
                    face_structure_scale=speed.face_structure_scale * factor * face,
                    appearance_image=appearance,
                    appearance_scale=0.0 if appearance is None else factor * (appearance_scale or base),
                )
                inpainting = dataclasses.replace(
                    settings, init_image=Image.new("RGB", (width, height), "grey"), mask_image=mask
                )
                requests += [(identity, crop, settings), (identity, crop, inpainting)]
    return requests


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


class _IPAttnProcessorWithPrecomputedKV(IPAdapterAttnProcessor2_0):
    """diffusers' IP-Adapter attention, with each adapter's image key and value computed once per call.

    The image tokens are the same at every denoising step of a pipeline call, so their key and value
    (to_k_ip/to_v_ip, then split into heads) are too; diffusers computes them again in every
    cross-attention layer at every step (about 17 operators a layer). _ProjectedOncePerCall sets
    `key_values` when it projects a call's tokens (outside the compiled transformer blocks) and clears
    it in forget(); while it is set, this processor uses those tensors instead of running
    to_k_ip/to_v_ip, and otherwise (or with ip_adapter_masks) it is diffusers' processor unchanged.
    Nothing in diffusers caches these, hence our own class; it subclasses diffusers' so that the weights,
    their names and set_ip_adapter_scale stay the same. The arithmetic is the same as diffusers' (the
    same operators on the same tensors), so the results are identical.
    """

    # Per adapter: (key, value), each (batch, heads, tokens, head_dim); None: compute them per step.
    key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def replacing(cls, processor: IPAdapterAttnProcessor2_0) -> _IPAttnProcessorWithPrecomputedKV:
        """A processor over the same to_k_ip/to_v_ip layers (shared, not copied) and scales."""
        # The meta device spares allocating the new linears' weights, which are replaced at once.
        with torch.device("meta"):
            new = cls(processor.hidden_size, processor.cross_attention_dim, processor.num_tokens, 1.0)
        new.to_k_ip, new.to_v_ip, new.scale = processor.to_k_ip, processor.to_v_ip, list(processor.scale)
        return new

    def precompute(self, attn, ip_hidden_states: list[torch.Tensor]) -> None:
        """Set key_values from one call's image tokens, as _ProjectedOncePerCall returns them: per adapter
        (batch, images, tokens, cross_attention_dim), batch the UNet's (2 with CFG). attn: the Attention
        module this processor belongs to (its number of heads)."""
        key_values = []
        for tokens, to_k_ip, to_v_ip in zip(ip_hidden_states, self.to_k_ip, self.to_v_ip, strict=True):
            # The same operators as diffusers' __call__: head_dim there is to_k's width over the heads.
            head_dim = attn.to_k.out_features // attn.heads
            key = to_k_ip(tokens).view(tokens.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
            value = to_v_ip(tokens).view(tokens.shape[0], -1, attn.heads, head_dim).transpose(1, 2)
            key_values.append((key, value))
        self.key_values = key_values

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if (
            self.key_values is None
            or ip_adapter_masks is not None
            or not isinstance(encoder_hidden_states, tuple)
        ):
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale, ip_adapter_masks
            )
        # From here on, diffusers' IPAdapterAttnProcessor2_0.__call__ (0.42.1) without masks, with the
        # image keys and values taken from key_values.
        encoder_hidden_states, _ = encoder_hidden_states
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        for (ip_key, ip_value), ip_scale in zip(self.key_values, self.scale, strict=True):
            # diffusers skips an adapter whose scale is 0 (or whose scales are all 0).
            if all(s == 0 for s in ip_scale) if isinstance(ip_scale, list) else ip_scale == 0:
                continue
            if ip_key.shape[0] != batch_size or ip_key.shape[1] != attn.heads:
                raise ValueError(
                    f"precomputed image keys {tuple(ip_key.shape)} do not fit batch {batch_size} with "
                    f"{attn.heads} heads: the UNet was called with other image tokens than were precomputed"
                )
            ip_hidden_states = F.scaled_dot_product_attention(
                query, ip_key, ip_value, attn_mask=None, dropout_p=0.0, is_causal=False
            )
            ip_hidden_states = ip_hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
            ip_hidden_states = ip_hidden_states.to(query.dtype)
            hidden_states = hidden_states + ip_scale * ip_hidden_states

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class _ProjectedOncePerCall(MultiIPAdapterImageProjection):
    """The UNet's image projection (both adapters' projection layers), run once per pipeline call.

    The pipeline hands the UNet the same image_embeds list at every denoising step, and the tokens
    projected from it do not change between steps; diffusers projects them again at each step (the
    FaceID projection and IP-Adapter Plus's 4-layer resampler: about 150 operators per UNet call). This
    keeps the last input list and its tokens, and returns them while the same list object comes back.
    When it projects a new list, it also sets each IP attention layer's image keys and values
    (_IPAttnProcessorWithPrecomputedKV.precompute), once per call rather than per step and layer.
    prepare() calls forget(), because the FaceID projection also reads per-request attributes
    (clip_embeds, shortcut_scale). Nothing in diffusers does this, hence our own class; it subclasses
    diffusers' so that the module names, the weights and everything else stay the same.
    """

    def __init__(self, image_projection_layers, ip_attentions=()) -> None:
        super().__init__(image_projection_layers)
        # A tuple, not a ModuleList: the attention layers stay the UNet's submodules only.
        self._ip_attentions = tuple(ip_attentions)

    def forget(self) -> None:
        self._last: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        for attention in self._ip_attentions:
            attention.processor.key_values = None

    def forward(self, image_embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        last = getattr(self, "_last", None)
        if last is not None and last[0] is image_embeds:
            return last[1]
        projected = super().forward(image_embeds)
        for attention in self._ip_attentions:
            attention.processor.precompute(attention, projected)
        # Holding the list keeps it alive, so its identity cannot pass to another list.
        self._last = (image_embeds, projected)
        return projected


def _project_once_per_request(unet) -> None:
    """Replace the UNet's image projection by a _ProjectedOncePerCall over the same projection layers,
    and its IP-Adapter attention processors by _IPAttnProcessorWithPrecomputedKV over the same layers."""
    projection = unet.encoder_hid_proj
    if type(projection) is MultiIPAdapterImageProjection:
        ip_attentions = []
        for module in unet.modules():
            if isinstance(module, Attention) and type(module.processor) is IPAdapterAttnProcessor2_0:
                module.set_processor(_IPAttnProcessorWithPrecomputedKV.replacing(module.processor))
                ip_attentions.append(module)
        unet.encoder_hid_proj = _ProjectedOncePerCall(projection.image_projection_layers, ip_attentions)
        unet.encoder_hid_proj.forget()


def apply_gpu_settings(pipe: StableDiffusionXLPipeline) -> None:
    """CUDA-only inference settings: channels-last convolutions (compilation: CharacterPipeline.compile).

    The weights are already fp16 (serving_device) with the fp16-fix VAE, and diffusers' default
    attention processors on torch 2 use scaled_dot_product_attention (flash / memory-efficient kernels).
    No CPU offload: the production components fit a 24 GB GPU (docs/PERFORMANCE.md).
    """
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
