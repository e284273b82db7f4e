"""The random profile: the production weights folder's layout, filled with random weights of a given size.

Owns writing that folder. At the "real" size every SDXL component comes from its published config
(specs/sdxl-architecture), the FaceID Plus v2, IP-Adapter Plus and SDXL-Lightning checkpoints have the
published files' keys and shapes (devtools/profiles/checkpoint_layouts.py), PuLID v1.1's files are our
ported modules' state dicts at their default (published) sizes (the adapter's 312 tensors, fp16: the
IDFormer under `id_adapter.` and the 140 ID attention weights of the real UNet; EVA02-CLIP-L-14-336's
visual tower; BiSeNet), and the magic prompt LLM is the Qwen2.5-1.5B architecture (specs/prompt-model):
random weights cost the same compute as the real ones, so the serving code can be timed on a GPU without
the production files. At the "tiny" size the same writer takes the tiny profile's miniature modules (and
its PuLID files, keyed for the tiny UNet): a CPU smoke run in seconds. The folder gets its own manifest
(profile "random"), so CharacterService.load() checks and loads it exactly as it loads production weights:
scripts/benchmark.py --profile random times the production code path, not a second one.

What is not at real size, and why: the tokenizers (the real vocabularies are not in the repository; the
stand-ins of devtools/profiles/stand_in_tokenizers.py give every id the real models accept), the insightface
models (buffalo_l and PuLID's antelopev2) and the safety checker (the tiny profile's stand-ins: their real
graphs are not in the repository; the face models' ~20 GFLOPs per image are small next to one UNet step's
~1.5 TFLOPs at batch 2, and run once per reference image). The EVA-CLIP file holds the visual tower alone:
PuLID never reads the text tower the published file also carries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from devtools.counting import real_size_modules
from devtools.profiles.checkpoint_layouts import (
    FACEID_LORA_RANK,
    LIGHTNING_LORA_RANK,
    REAL_RESAMPLER_WIDTH,
    VIT_H_WIDTH,
)
from devtools.profiles.stand_in_tokenizers import chat_stand_in_tokenizer
from devtools.profiles.tiny import sdxl as tiny_sdxl
from devtools.profiles.tiny.appearance import TINY_RESAMPLER_WIDTH
from devtools.profiles.tiny.faces import write_face_models
from devtools.profiles.tiny.pulid import write_antelopev2, write_pulid
from devtools.profiles.tiny.safety import write_safety_checker
from devtools.profiles.tiny.turbo import TINY_LORA_RANK as TINY_TURBO_RANK
from devtools.profiles.tiny.turbo import write_turbo_lora
from model.identity.pulid import BiSeNet, EVAVisionTower, IDFormer, id_attention_layers
from model.identity.pulid.id_attention import ID_TOKEN_WIDTH
from model.identity.pulid.unet_layers import ATTENTION_PREFIX, IDFORMER_PREFIX
from model.weights.layout import WeightsLayout
from model.weights.manifest import RANDOM, Manifest, load_manifest, write_manifest

PROMPT_MODEL_CONFIG = Path(__file__).resolve().parents[2] / "specs" / "prompt-model" / "config.json"
SEED = 0
# What the writer stores in size.json beside the manifest, so that a folder is reused only for its own size
# and layout version (2: the fp16-fix VAE config, force_upcast false).
SIZE_FILE = "size.json"
LAYOUT_VERSION = 2


def _real_modules(device: torch.device) -> dict[str, torch.nn.Module]:
    # Built and initialised on the target device (seconds on a GPU, where the CPU would take minutes), in
    # fp16: the SDXL files are stored in fp16 as the published ones, and the loader casts the rest.
    modules = real_size_modules(torch.float16, device)
    # Production's VAE is madebyollin/sdxl-vae-fp16-fix, SDXL's architecture with force_upcast false in
    # its config.json; specs/sdxl-architecture/vae_config.json is SDXL's own (true), with which diffusers
    # would decode (and inpainting encode) in fp32 on every request: slower and with a higher peak than
    # the server it stands for.
    modules["vae"].register_to_config(force_upcast=False)
    return modules


def _tiny_modules(device: torch.device) -> dict[str, torch.nn.Module]:
    return {
        "unet": tiny_sdxl.tiny_unet(),
        "vae": tiny_sdxl.tiny_vae(),
        "image_encoder": tiny_sdxl.tiny_image_encoder(),
        "text_encoder": tiny_sdxl.tiny_text_encoder(),
        "text_encoder_2": tiny_sdxl.tiny_text_encoder_2(),
    }


def _cpu_fp16(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: value.to("cpu", torch.float16).contiguous() for key, value in state_dict.items()}


def real_pulid_adapter(unet: UNet2DConditionModel, device: torch.device) -> dict[str, torch.Tensor]:
    """pulid_v1.1.safetensors' 312 tensors at the published shapes, random, in fp16 (on `device`: meta
    gives the layout alone): IDFormer()'s 172 under `id_adapter.` and id_to_k/id_to_v [hidden, 2048] for
    each of `unet`'s 70 cross-attentions at the checkpoint's indices."""
    with device:
        state = {IDFORMER_PREFIX + key: value for key, value in IDFormer().half().state_dict().items()}
        for layer in id_attention_layers(unet):
            for kind in "kv":
                weight = torch.randn(layer.hidden_size, ID_TOKEN_WIDTH) * ID_TOKEN_WIDTH**-0.5
                state[f"{ATTENTION_PREFIX}{layer.index}.id_to_{kind}.weight"] = weight.half()
    return state


def _write_real_pulid(root: Path, unet: UNet2DConditionModel, device: torch.device) -> list[Path]:
    # Built on `device` with the modules' own initialisation, as the SDXL modules are; saved from the CPU.
    layout = WeightsLayout(root)
    layout.pulid.mkdir(parents=True, exist_ok=True)
    save_file(_cpu_fp16(real_pulid_adapter(unet, device)), layout.pulid_adapter)
    with device:
        tower, parser = EVAVisionTower(), BiSeNet()
    torch.save(_cpu_fp16(tower.state_dict(), "visual."), layout.eva_clip)
    del tower
    torch.save(_cpu_fp16(parser.state_dict()), layout.face_parsing)
    return [layout.pulid_adapter, layout.eva_clip, layout.face_parsing, *write_antelopev2(root)]


def _write_tiny_pulid(root: Path, unet: UNet2DConditionModel, device: torch.device) -> list[Path]:
    # The tiny profile's files: their adapter is keyed for the tiny UNet, the one this size builds.
    return write_pulid(root)


def _real_prompt_model_config(vocab_size: int) -> Qwen2Config:
    return Qwen2Config(**json.loads(PROMPT_MODEL_CONFIG.read_text()))


def _tiny_prompt_model_config(vocab_size: int) -> Qwen2Config:
    # Qwen2's layout (grouped key/value heads, tied embeddings) at miniature width; the vocabulary is the
    # stand-in tokenizer's, so that every generated id decodes to text.
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )


@dataclass(frozen=True)
class RandomSize:
    """One size of the random profile: the modules and the widths of the adapters' checkpoints."""

    name: str
    sdxl_modules: Callable[[torch.device], dict[str, torch.nn.Module]]
    clip_width: int
    faceid_lora_rank: int
    resampler_width: int
    turbo_lora_rank: int
    prompt_model_config: Callable[[int], Qwen2Config]
    # Writes PuLID's files for the size's UNet (root, unet, device) and returns their paths.
    write_pulid: Callable[[Path, UNet2DConditionModel, torch.device], list[Path]]


SIZES = {
    "real": RandomSize(
        "real",
        _real_modules,
        clip_width=VIT_H_WIDTH,
        faceid_lora_rank=FACEID_LORA_RANK,
        resampler_width=REAL_RESAMPLER_WIDTH,
        turbo_lora_rank=LIGHTNING_LORA_RANK,
        prompt_model_config=_real_prompt_model_config,
        write_pulid=_write_real_pulid,
    ),
    "tiny": RandomSize(
        "tiny",
        _tiny_modules,
        clip_width=tiny_sdxl.IMAGE_ENCODER_WIDTH,
        faceid_lora_rank=tiny_sdxl.TINY_LORA_RANK,
        resampler_width=TINY_RESAMPLER_WIDTH,
        turbo_lora_rank=TINY_TURBO_RANK,
        prompt_model_config=_tiny_prompt_model_config,
        write_pulid=_write_tiny_pulid,
    ),
}


def write_prompt_model(root: Path, config: Qwen2Config, device: torch.device) -> list[Path]:
    """A random-weight causal LLM of `config`, in bf16, with the chat stand-in tokenizer, in prompt_model/.

    Its generation config has no end-of-sequence token, so that every rewrite generates max_new_tokens
    tokens: a random model would otherwise stop at a random point, and the timing would measure luck.
    """
    folder = WeightsLayout(root).prompt_model
    tokenizer = chat_stand_in_tokenizer()
    with device:
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sorted(path for path in folder.rglob("*") if path.is_file())


def write_random_profile(root: Path, size: RandomSize, device: torch.device) -> Manifest:
    """Write the production layout with random weights of `size` into `root`; return its manifest.

    Deterministic for a given device (seeded). Building on a CUDA device initialises the real-size modules
    there; the files are the same format either way.
    """
    layout = WeightsLayout(Path(root).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(SEED)
        with device:
            modules = size.sdxl_modules(device)
        paths = tiny_sdxl.write_sdxl_folder(
            layout.root,
            modules,
            clip_width=size.clip_width,
            faceid_lora_rank=size.faceid_lora_rank,
            resampler_width=size.resampler_width,
            seed=SEED,
        )
        paths += write_turbo_lora(layout.root, modules["unet"], rank=size.turbo_lora_rank, seed=SEED)
        paths += size.write_pulid(layout.root, modules["unet"], device)
        del modules
        paths += write_face_models(layout.face_analysis)
        paths += write_safety_checker(layout.root)
        vocab_size = len(chat_stand_in_tokenizer())
        paths += write_prompt_model(layout.root, size.prompt_model_config(vocab_size), device)
    (layout.root / SIZE_FILE).write_text(json.dumps({"size": size.name, "version": LAYOUT_VERSION}) + "\n")
    return write_manifest(layout.root, profile=RANDOM, paths=paths)


def ensure_random_profile(root: Path, size: RandomSize, device: torch.device) -> tuple[Manifest, float]:
    """The random profile of `size` in `root`: reused when a complete one of that size is there, else
    written. Returns its manifest and the seconds spent writing (0 when reused).

    Raises ValueError when `root` holds something else (another profile or size), rather than overwrite it.
    """
    layout = WeightsLayout(Path(root))
    if layout.manifest.is_file():
        manifest = load_manifest(layout.manifest)
        size_file = layout.root / SIZE_FILE
        written = json.loads(size_file.read_text()) if size_file.is_file() else {}
        found, version = written.get("size"), written.get("version", 1)
        if manifest.profile != RANDOM or found != size.name or version != LAYOUT_VERSION:
            raise ValueError(
                f"{root} holds {manifest.profile} weights (size {found}, layout version {version}), not the "
                f"random profile of size {size.name}, version {LAYOUT_VERSION}: pass another --weights-dir, "
                "or delete that folder"
            )
        return manifest, 0.0
    started = time.perf_counter()
    manifest = write_random_profile(root, size, device)
    return manifest, time.perf_counter() - started
