"""A tiny random-weight safety checker in the production layout (safety_checker/ of the weights folder).

Same class (diffusers' StableDiffusionSafetyChecker), same files (config.json, the fp16 weights variant,
preprocessor_config.json), miniature CLIP vision tower. The checker flags an image when the cosine of its
embedding with a concept embedding exceeds that concept's threshold; a cosine never exceeds 1, so the
default threshold of 2 never flags (tests stay deterministic), and a threshold below -1 flags everything
(the test of the flagging path builds such a checker).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

from model.safety import SAFETY_CHECKER_VARIANT
from model.weights.layout import WeightsLayout

SEED = 0
NEVER_FLAGS = 2.0
ALWAYS_FLAGS = -2.0
WIDTH = 32


def tiny_safety_checker(threshold: float = NEVER_FLAGS) -> StableDiffusionSafetyChecker:
    config = CLIPConfig(
        text_config={"hidden_size": WIDTH, "intermediate_size": 2 * WIDTH, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": WIDTH, "intermediate_size": 2 * WIDTH, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
        projection_dim=WIDTH,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        checker = StableDiffusionSafetyChecker(config)
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
    checker.concept_embeds_weights.fill_(threshold)
    checker.special_care_embeds_weights.fill_(threshold)
    return checker


def write_safety_checker(root: Path, threshold: float = NEVER_FLAGS) -> list[Path]:
    """Write the tiny checker into WeightsLayout(root).safety_checker; return the files written."""
    folder = WeightsLayout(root).safety_checker
    tiny_safety_checker(threshold).to(torch.float16).save_pretrained(folder, variant=SAFETY_CHECKER_VARIANT)
    # CLIP's preprocessing as the published preprocessor_config.json states it (224 crop, CLIP mean/std).
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        folder
    )
    return sorted(path for path in folder.rglob("*") if path.is_file())
