"""The optional NSFW check of each output, as Ideogram moderates its own outputs.

Owns loading the checker from the weights folder when it is switched on (CHARACTER_SAFETY_CHECKER, `on` by
default, read in model/options.py: the contract has no input for it), and the error a flagged output ends
with. The
checker is diffusers' StableDiffusionSafetyChecker (the CLIP ViT-L/14 concept checker that Stable
Diffusion ships) with its CLIPImageProcessor, both read from `safety_checker/` in the weights folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPImageProcessor

from model.errors import RequestRefused
from model.options import SAFETY_CHECKER_ENV

log = logging.getLogger(__name__)

# The published checker (stable-diffusion-v1-5's safety_checker/) is stored in fp16 under this variant.
SAFETY_CHECKER_VARIANT = "fp16"
FLAGGED_MESSAGE = (
    "The safety checker flagged the generated image as not safe for work, so it is not returned: "
    "change the prompt or the reference image and try again."
)


class UnsafeOutputError(RequestRefused, RuntimeError):
    """The output was flagged by the safety checker; the prediction fails instead of returning it."""


@dataclass
class SafetyChecker:
    model: StableDiffusionSafetyChecker
    processor: CLIPImageProcessor
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, folder: Path, device: torch.device, dtype: torch.dtype) -> SafetyChecker:
        model = StableDiffusionSafetyChecker.from_pretrained(
            folder, variant=SAFETY_CHECKER_VARIANT, torch_dtype=dtype
        ).to(device)
        model.eval()
        return cls(
            model=model, processor=CLIPImageProcessor.from_pretrained(folder), device=device, dtype=dtype
        )

    def flags(self, image: Image.Image) -> bool:
        """Whether the checker finds any of its NSFW concepts in the image."""
        clip_input = self.processor(images=image, return_tensors="pt").pixel_values
        # diffusers blacks out flagged images in the array it is given; a scratch copy keeps ours intact.
        _, has_nsfw = self.model(clip_input=clip_input.to(self.device, self.dtype), images=[np.array(image)])
        return bool(has_nsfw[0])

    def check(self, image: Image.Image) -> None:
        """Raise UnsafeOutputError when the image is flagged."""
        if self.flags(image):
            log.info("Safety checker: output flagged")
            raise UnsafeOutputError(FLAGGED_MESSAGE)
        log.info("Safety checker: passed")


def load_safety_checker(
    folder: Path, enabled: bool, device: torch.device, dtype: torch.dtype
) -> SafetyChecker | None:
    """The checker when the switch is on, else None (and a log line saying outputs go unchecked)."""
    if not enabled:
        log.info("Safety checker: off (%s=off); outputs are not checked", SAFETY_CHECKER_ENV)
        return None
    return SafetyChecker.load(folder, device, dtype)
