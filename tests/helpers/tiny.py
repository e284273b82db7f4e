"""Tiny components for the generation tests: the tiny SDXL folder (with the Turbo LoRA and PuLID's files)
that CharacterPipeline.load reads, and random identities (a unit ArcFace embedding and a face crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from devtools.profiles.tiny.pulid import write_pulid
from devtools.profiles.tiny.sdxl import write_sdxl_components
from devtools.profiles.tiny.turbo import write_turbo_lora
from model.weights.layout import WeightsLayout


def write_tiny_sdxl(root: Path) -> WeightsLayout:
    """The tiny SDXL components, the Turbo speed's LoRA (load() attaches it too) and PuLID's miniature files
    under `root`."""
    write_sdxl_components(root)
    write_turbo_lora(root)
    write_pulid(root)
    return WeightsLayout(root)


def random_identity(seed: int) -> tuple[np.ndarray, Image.Image]:
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal(512).astype(np.float32)
    crop = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB")
    return embedding / np.linalg.norm(embedding), crop
