"""The performance budget of production, computed on the real architecture with empty (meta) weights.

Owns: building the real-size pipeline on the meta device (real configs from specs/sdxl-architecture,
real-shape FaceID Plus v2, IP-Adapter Plus and SDXL-Lightning checkpoints, attached by the production
code), counting the FLOPs of one request per speed with torch.utils.flop_counter (meta tensors carry
shapes, so the count is exact and costs no compute), and the memory budget of the production components
at their serving dtype. scripts/benchmark.py prints these and tests check them; times are measured there,
not derived from these counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from devtools.profiles.checkpoint_layouts import (
    FACEID_LORA_RANK,
    LIGHTNING_LORA_RANK,
    VIT_H_WIDTH,
    faceid_plus_v2_shapes,
    faceid_plus_v2_state_dict,
    ip_adapter_plus_shapes,
    ip_adapter_plus_state_dict,
    lightning_lora_shapes,
    lightning_lora_state_dict,
)
from devtools.profiles.stand_in_tokenizers import CLIP_PAD_TOKEN, OPEN_CLIP_PAD_TOKEN, clip_stand_in_tokenizer
from model.generation.pipeline import PRISTINE_ON_GPU_MIN_GIB, CharacterPipeline
from model.generation.settings import FaceCondition, GenerationSettings, IDTokens
from model.generation.speeds import Speed
from model.generation.warm_up import PULID_ID_TOKENS
from model.identity.pulid import BiSeNet, EVAVisionTower, IDFormer, id_attention_layers
from model.identity.pulid.id_attention import ID_TOKEN_WIDTH
from model.options import FACEID, PULID
from model.weights.layout import APPEARANCE_ADAPTER_FILE, FACEID_ADAPTER_FILE, TURBO_LORA_FILE, WeightsLayout
from model.weights.manifest import production_manifest

SDXL_SPECS = Path(__file__).resolve().parent.parent / "specs" / "sdxl-architecture"
META = torch.device("meta")
SERVING_DTYPE = torch.float16  # serving_device() on CUDA

# No seconds are predicted from these counts any more: the GPU times are measured (docs/PERFORMANCE.md,
# scripts/benchmark.py --profile random). The 40%-of-H100-peak assumption that used to turn FLOPs into
# seconds predicted 1.04 s for Default where an H200 measured 3.92 s (2026-11-30); a plain SDXL UNet call
# at batch 2 measured 63 ms there, 215 TFLOP/s by this counter, 22% of the 989 TFLOP/s dense fp16 peak.
GPU_MEMORY_GIB = 24.0
# Activation headroom at 1024x1024: the same published run peaks at 10.03 GB for ~7.0 GB of fp16 SDXL
# weights, so ~3 GB of activations (the VAE decode at 1024x1024 is the peak); we reserve twice that.
ACTIVATION_RESERVE_GIB = 6.0
# The magic prompt LLM's weights file (Qwen2.5-1.5B-Instruct), stored in bf16: 2 bytes a parameter.
PROMPT_LLM_FILE = "prompt_model/model.safetensors"
# The output safety checker (model/safety.py), loaded at the serving dtype when CHARACTER_SAFETY_CHECKER=on.
SAFETY_CHECKER_FILE = "safety_checker/model.fp16.safetensors"

PROMPT = "a portrait photo of a woman in a garden, soft light"
NEGATIVE_PROMPT = "blurry, low quality"


def _config(name: str) -> dict:
    return json.loads((SDXL_SPECS / name).read_text())


def real_size_modules(
    dtype: torch.dtype = SERVING_DTYPE, device: torch.device = META
) -> dict[str, torch.nn.Module]:
    """The production UNet, VAE, text encoders and ViT-H image encoder, from their real configs.

    On meta (the default) they hold no memory; on a real device they are built there with the libraries'
    random initialisation (the random profile of the benchmark: devtools/profiles/random.py).
    """
    with device:
        modules = {
            "unet": UNet2DConditionModel.from_config(_config("unet_config.json")),
            "vae": AutoencoderKL.from_config(_config("vae_config.json")),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**_config("text_encoder_config.json"))),
            "text_encoder_2": CLIPTextModelWithProjection(
                CLIPTextConfig(**_config("text_encoder_2_config.json"))
            ),
            "image_encoder": CLIPVisionModelWithProjection(
                CLIPVisionConfig(**_config("image_encoder_config.json"))
            ),
        }
    return {name: module.to(dtype).eval() for name, module in modules.items()}


def real_size_character(
    dtype: torch.dtype = SERVING_DTYPE, identity_adapter: str = FACEID
) -> CharacterPipeline:
    """The production pipeline on meta: SDXL, the identity adapter (FaceID Plus v2 by default, or PuLID
    v1.1's 140 ID attention weights), IP-Adapter Plus and the Lightning LoRA, as in load()."""
    modules = real_size_modules(dtype)
    sdxl = StableDiffusionXLPipeline(
        **modules,
        # The real vocabularies are not in the repository; prompts are always padded to 77 tokens.
        tokenizer=clip_stand_in_tokenizer(pad_token=CLIP_PAD_TOKEN),
        tokenizer_2=clip_stand_in_tokenizer(pad_token=OPEN_CLIP_PAD_TOKEN),
        scheduler=EulerDiscreteScheduler.from_config(_config("scheduler_config.json")),
        add_watermarker=False,
    )
    unet = modules["unet"]
    faceid = faceid_plus_v2_state_dict(
        unet, clip_width=VIT_H_WIDTH, lora_rank=FACEID_LORA_RANK, device=META, dtype=dtype
    )
    appearance = ip_adapter_plus_state_dict(unet, clip_width=VIT_H_WIDTH, device=META, dtype=dtype)
    turbo = lightning_lora_state_dict(unet, device=META, dtype=dtype)
    if identity_adapter == PULID:
        return CharacterPipeline.from_sdxl(
            sdxl, None, appearance, META, dtype, turbo_lora=turbo, pulid_attention=pulid_attention_state(unet)
        )
    return CharacterPipeline.from_sdxl(sdxl, faceid, appearance, META, dtype, turbo_lora=turbo)


def pulid_attention_state(unet: UNet2DConditionModel, dtype: torch.dtype = SERVING_DTYPE) -> dict:
    """Empty real-shape `{index}.id_to_{k,v}.weight` [hidden, 2048], one pair per cross-attention."""
    shape = (ID_TOKEN_WIDTH,)
    return {
        f"{layer.index}.id_to_{kind}.weight": torch.empty(layer.hidden_size, *shape, device=META, dtype=dtype)
        for layer in id_attention_layers(unet)
        for kind in "kv"
    }


def pulid_settings_for(speed: Speed, width: int = 1024, height: int = 1024) -> GenerationSettings:
    """A face request of `speed` for PuLID (32 ID tokens and the null ID, FaceID off, the appearance adapter
    off), on meta tensors: the shapes of a request."""
    tokens = torch.empty(1, PULID_ID_TOKENS, ID_TOKEN_WIDTH, device=META, dtype=SERVING_DTYPE)
    settings = settings_for(speed, width, height)
    return dataclasses.replace(
        settings,
        adapters=settings.adapters.for_pulid(),
        face=IDTokens(tokens=tokens, null=torch.empty_like(tokens)),
    )


def count_flops(run) -> FlopCounterMode:
    """Count the FLOPs of run() (a multiply-add counts 2), on any device, meta included.

    The counter keeps totals per module class too: counter.get_flop_counts()["CLIPTextModel"].
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return counter


def _module_flops(counter: FlopCounterMode, *names: str) -> int:
    counts = counter.get_flop_counts()
    return sum(sum(counts.get(name, {}).values()) for name in names)


@dataclass(frozen=True)
class RequestFlops:
    """The FLOPs of one text-to-image request of one speed, by component."""

    speed: str
    denoiser_evaluations: int
    text_encoders: int
    image_encoder: int
    denoiser: int
    vae_decode: int

    @property
    def total(self) -> int:
        return self.text_encoders + self.image_encoder + self.denoiser + self.vae_decode


def settings_for(speed: Speed, width: int = 1024, height: int = 1024) -> GenerationSettings:
    """A face request of `speed` (FaceID at the speed's scales, the appearance adapter off), on a unit
    embedding and a black crop: the shapes of a request, which are all that FLOPs depend on."""
    face = FaceCondition(
        embedding=np.full(512, 512**-0.5, dtype=np.float32), face_crop=Image.new("RGB", (224, 224))
    )
    return GenerationSettings(
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        width=width,
        height=height,
        seed=0,
        **speed.schedule(),
        adapters=speed.adapters.with_appearance(0.0),
        face=face,
    )


def request_flops(
    character: CharacterPipeline, name: str, speed: Speed, width: int = 1024, height: int = 1024
) -> RequestFlops:
    """Count one request of `speed` on the (meta) pipeline, component by component (see _request_flops);
    the face is PuLID's ID tokens when the pipeline's identity adapter is PuLID, else FaceID's."""
    build = pulid_settings_for if character.identity_adapter == PULID else settings_for
    return _request_flops(character, name, speed, build(speed, width, height))


def _request_flops(
    character: CharacterPipeline, name: str, speed: Speed, settings: GenerationSettings
) -> RequestFlops:
    """Count one request of `speed` on the (meta) pipeline, component by component.

    prepare() sets the speed's adapters and runs the encoders (text and face crop) as a request does;
    one UNet call at the pipeline's batch (2 with CFG) is counted and multiplied by the steps, since
    every step has the same shapes; the VAE decodes once.
    """
    width, height = settings.width, settings.height
    # A request as the server runs it, after setup: the zero image's CLIP encoding (CFG's unconditional
    # half) is made once per process, by the warm-up or the first guided request, and not counted here.
    character.prepare(settings)
    outside_loop = count_flops(lambda: character.prepare(settings))
    pipe, inputs = character.prepare(settings)
    dtype, device = pipe.unet.dtype, character.device
    guided = speed.guided
    with torch.no_grad():
        image_embeds = pipe.prepare_ip_adapter_image_embeds(
            None, inputs["ip_adapter_image_embeds"], device, 1, do_classifier_free_guidance=guided
        )
    text, pooled = inputs["prompt_embeds"], inputs["pooled_prompt_embeds"]
    if guided:  # the pipeline's batch: [unconditional, conditional]
        text = torch.cat([inputs["negative_prompt_embeds"], text])
        pooled = torch.cat([inputs["negative_pooled_prompt_embeds"], pooled])
    batch = text.shape[0]
    latent = (batch, 4, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    def denoiser_step():
        pipe.unet(
            torch.empty(latent, device=device, dtype=dtype),
            torch.tensor(999.0, device=device),
            encoder_hidden_states=text,
            added_cond_kwargs={
                "text_embeds": pooled,
                "time_ids": torch.empty(batch, 6, device=device, dtype=dtype),
                "image_embeds": image_embeds,
            },
        )

    step = count_flops(denoiser_step).get_total_flops()
    vae_decode = count_flops(
        lambda: pipe.vae.decode(torch.empty(1, *latent[1:], device=device, dtype=dtype))
    ).get_total_flops()
    return RequestFlops(
        speed=name,
        denoiser_evaluations=speed.denoiser_evaluations,
        text_encoders=_module_flops(outside_loop, "CLIPTextModel", "CLIPTextModelWithProjection"),
        image_encoder=_module_flops(outside_loop, "CLIPVisionModelWithProjection"),
        denoiser=step * speed.num_inference_steps,
        vae_decode=vae_decode,
    )


@dataclass(frozen=True)
class ComponentMemory:
    name: str
    parameters: int
    bytes_per_parameter: float
    note: str
    # False for what a 24 GB GPU keeps in host memory instead.
    on_gpu: bool = True

    @property
    def bytes(self) -> int:
        return int(self.parameters * self.bytes_per_parameter)


def _parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _onnx_bytes(folder: Path) -> int:
    """The bytes of the ONNX files the manifest lists in `folder` (relative to the weights folder); their
    graphs are small next to the fp32 weights, so bytes / 4 is about the parameter count."""
    sizes = [
        f.size
        for f in production_manifest().files
        if Path(f.path).parent == folder and f.path.endswith(".onnx")
    ]
    if not sizes or None in sizes:
        raise ValueError(f"the production manifest states no size for some ONNX file of {folder}")
    return sum(sizes)


def memory_budget(
    dtype: torch.dtype = SERVING_DTYPE, identity_adapter: str | None = PULID
) -> list[ComponentMemory]:
    """Parameter bytes of every production component at its serving dtype (GPU-resident unless noted),
    with the identity adapter setup loads (CHARACTER_IDENTITY_ADAPTER: PuLID's four components, or FaceID
    Plus v2); identity_adapter=None lists both adapters' rows (the tables that compare them)."""
    size = torch.finfo(dtype).bits // 8
    modules = real_size_modules(dtype)
    faceid = faceid_plus_v2_shapes(modules["unet"], clip_width=VIT_H_WIDTH, lora_rank=FACEID_LORA_RANK)
    faceid_parameters = sum(math.prod(shape) for part in faceid.values() for shape in part.values())
    appearance_parameters = sum(
        math.prod(shape) for shape in ip_adapter_plus_shapes(modules["unet"], clip_width=VIT_H_WIDTH).values()
    )
    turbo_shapes = lightning_lora_shapes(modules["unet"], LIGHTNING_LORA_RANK)
    turbo_parameters = sum(math.prod(shape) for shape in turbo_shapes.values())
    # The base weights of every layer a LoRA adapts (the Lightning LoRA's modules include all of the
    # FaceID LoRA's): out_features (up's rows) times in_features x kernel (down's other dimensions).
    adapted_parameters = sum(
        shape[0] * math.prod(turbo_shapes[key.replace("lora_up", "lora_down")][1:])
        for key, shape in turbo_shapes.items()
        if key.endswith(".lora_up.weight")
    )
    with META:
        pulid_parameters = _parameters(IDFormer()) + sum(
            layer.hidden_size * ID_TOKEN_WIDTH * 2 for layer in id_attention_layers(modules["unet"])
        )
        eva_parameters = _parameters(EVAVisionTower())
        parsing_parameters = _parameters(BiSeNet())
    # The manifest's paths are relative to the weights folder: so is a layout rooted at ".".
    relative = WeightsLayout(Path())
    buffalo_l_bytes = _onnx_bytes(relative.face_analysis)  # FaceID Plus v2's face models
    antelopev2_bytes = _onnx_bytes(relative.pulid_face_analysis)  # PuLID's
    (llm_bytes,) = [f.size for f in production_manifest().files if f.path == PROMPT_LLM_FILE]
    (safety_bytes,) = [f.size for f in production_manifest().files if f.path == SAFETY_CHECKER_FILE]
    rows = [
        ComponentMemory(name, _parameters(module), size, str(dtype).removeprefix("torch."))
        for name, module in modules.items()
    ]
    rows += [
        ComponentMemory(f"FaceID Plus v2 ({FACEID_ADAPTER_FILE})", faceid_parameters, size, "with LoRA r128"),
        ComponentMemory(f"IP-Adapter Plus ({APPEARANCE_ADAPTER_FILE})", appearance_parameters, size, ""),
        ComponentMemory(f"Lightning LoRA ({TURBO_LORA_FILE})", turbo_parameters, size, "r64 factors"),
        ComponentMemory(
            "pristine copy of the LoRA-adapted UNet weights",
            adapted_parameters,
            size,
            f"exact LoRA switching; host memory on GPUs under {PRISTINE_ON_GPU_MIN_GIB:.0f} GiB",
            on_gpu=False,
        ),
        ComponentMemory("PuLID v1.1 (IDFormer + 140 ID attention weights)", pulid_parameters, size, ""),
        ComponentMemory("EVA02-CLIP-L-14-336 visual tower (PuLID)", eva_parameters, size, ""),
        ComponentMemory("BiSeNet face parsing (PuLID)", parsing_parameters, 4, "fp32"),
        ComponentMemory(
            "insightface buffalo_l (ONNX)", buffalo_l_bytes // 4, 4, "fp32, onnxruntime, from its file sizes"
        ),
        ComponentMemory(
            "insightface antelopev2 (ONNX, PuLID)",
            antelopev2_bytes // 4,
            4,
            "fp32, onnxruntime, from its file sizes",
        ),
        ComponentMemory("magic prompt LLM (Qwen2.5-1.5B)", llm_bytes // 2, 2, "bf16, from its file size"),
        ComponentMemory("safety checker (CLIP ViT-L/14)", safety_bytes // 2, 2, "fp16, from its file size"),
    ]
    pulid_rows = ("PuLID v1.1", "EVA02-CLIP", "BiSeNet", "insightface antelopev2")
    if identity_adapter == PULID:
        rows = [row for row in rows if not row.name.startswith("FaceID Plus v2")]
    elif identity_adapter == FACEID:
        rows = [row for row in rows if not row.name.startswith(pulid_rows)]
    return rows


def fits_gpu(rows: list[ComponentMemory], gpu_gib: float = GPU_MEMORY_GIB) -> tuple[bool, float]:
    """Whether the GPU-resident weights plus the activation reserve fit; and the GiB left after both."""
    weights_gib = sum(row.bytes for row in rows if row.on_gpu) / 2**30
    left = gpu_gib - weights_gib - ACTIVATION_RESERVE_GIB
    return left >= 0, left
