"""A tiny random-weight CLIPModel for CLIP-T, in the file layout of openai/clip-vit-large-patch14.

The evaluation script scores prompt adherence with this folder exactly as with the real model (config,
safetensors weights, CLIP tokenizer files, image processor config); the scores are meaningless, the code
path is the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from devtools.profiles.stand_in_tokenizers import CLIP_PAD_TOKEN, write_clip_stand_in_tokenizer
from devtools.profiles.tiny.sdxl import _text_config
from model.weights.layout import WeightsLayout

SEED = 0
WIDTH = 32  # ViT-L/14: 1024 (vision) and 768 (text) wide, projected to 768
IMAGE_SIZE = 224  # as ViT-L/14, with its patch 14
PATCH_SIZE = 14


def tiny_clip_model() -> CLIPModel:
    text = _text_config(hidden_act="quick_gelu").to_dict()
    vision = {
        "hidden_size": WIDTH,
        "intermediate_size": 2 * WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "hidden_act": "quick_gelu",
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=WIDTH))


def write_evaluation_clip(root: Path) -> list[Path]:
    """Write the tiny CLIP-T model into WeightsLayout(root).evaluation_clip; return the files written."""
    folder = WeightsLayout(root).evaluation_clip
    # The tokenizer writer starts from an empty folder, so it goes first.
    write_clip_stand_in_tokenizer(folder, pad_token=CLIP_PAD_TOKEN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = tiny_clip_model()
    model.save_pretrained(folder)
    # The PIL processor: the default one needs torchvision, which the project does not install.
    CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return sorted(path for path in folder.rglob("*") if path.is_file())
