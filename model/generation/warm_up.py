"""The warm-up: what setup runs so that no request compiles or pays for first-call work.

Owns the warm-up requests that make every graph a request can need when the UNet is compiled
(model/generation/compilation.py): every speed, path (face, appearance, face with appearance) and mode
(text-to-image, inpainting), at two sizes, prompt lengths and adapter scales. Uncompiled, the same
requests do CUDA's first-call work (kernels, the allocator's pool).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from model.generation.settings import AdapterScales, FaceCondition, GenerationSettings, IDTokens
from model.generation.speeds import SPEEDS

if TYPE_CHECKING:  # pipeline.py imports this module
    from model.generation.pipeline import CharacterPipeline

log = logging.getLogger(__name__)

# Two sizes, two prompt lengths and two values of every adapter scale during the warm-up: dynamo compiles
# the first call of a graph for its exact shapes and scale values, and on the first change marks those
# dimensions and floats dynamic; after the warm-up no size, prompt length or scale recompiles.
WARM_UP_SIZES = ((1024, 1024), (1152, 896))
WARM_UP_PROMPTS = ("a portrait photo of a character", " ".join(["a detailed photo of a character"] * 20))
WARM_UP_SCALE_FACTORS = (1.0, 0.5)
# PuLID v1.1's IDFormer gives 32 ID tokens.
PULID_ID_TOKENS = 32
# Denoising steps per warm-up run: every step calls the same graphs.
WARM_UP_STEPS = 2


@dataclass(frozen=True)
class WarmUp:
    """What CharacterPipeline.warm_up ran: pipeline calls, wall seconds, and the graphs dynamo compiled
    (0 when the UNet is not compiled)."""

    runs: int
    seconds: float
    compiled: bool
    graphs: int


def stand_in_face(id_token_width: int | None) -> FaceCondition | IDTokens:
    """A face of random numbers for the identity adapter that is loaded: PuLID's ID tokens
    [1, PULID_ID_TOKENS, id_token_width] when id_token_width is given, else FaceID's embedding and crop."""
    rng = np.random.default_rng(0)
    if id_token_width is not None:
        tokens = torch.from_numpy(rng.standard_normal((1, PULID_ID_TOKENS, id_token_width), np.float32))
        return IDTokens(tokens=tokens, null=torch.zeros_like(tokens))
    embedding = rng.standard_normal(512).astype(np.float32)
    embedding /= np.linalg.norm(embedding)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB")
    return FaceCondition(embedding=embedding, face_crop=image)


def warm_up_requests(
    sizes: tuple[tuple[int, int], ...],
    steps: int,
    appearance_with_face: float,
    id_token_width: int | None = None,
) -> list[GenerationSettings]:
    """The warm-up's requests: per round (a size, a prompt, a scale factor), every speed x path (face,
    appearance, face with appearance when configured) x text-to-image and inpainting, at the speed's
    schedule cut to `steps` steps; the face is PuLID's when id_token_width is given (its ID tokens'
    width), else FaceID's."""
    face = stand_in_face(id_token_width)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB")
    # (face, appearance image, appearance scale or None for the speed's) per path.
    paths = [(face, None, None), (None, image, None)]
    if appearance_with_face:
        paths.append((face, image, appearance_with_face))
    requests = []
    for index, (width, height) in enumerate(sizes):
        factor = WARM_UP_SCALE_FACTORS[index % len(WARM_UP_SCALE_FACTORS)]
        mask = Image.new("L", (width, height), 0)
        mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
        for speed in SPEEDS.values():
            for path_face, appearance, appearance_scale in paths:
                # Every scale but num_zero, whose change would change the ID attention's shapes.
                factors = {field.name: factor for field in dataclasses.fields(AdapterScales)}
                scales = speed.adapters.times(AdapterScales(**factors | {"num_zero": 1.0}))
                if path_face is None:
                    scales = scales.without_face()
                elif isinstance(path_face, IDTokens):
                    scales = scales.for_pulid()
                else:
                    scales = scales.for_faceid()
                base = speed.adapters.appearance
                scales = scales.with_appearance(
                    0.0 if appearance is None else factor * (appearance_scale or base)
                )
                settings = GenerationSettings(
                    prompt=WARM_UP_PROMPTS[index % len(WARM_UP_PROMPTS)],
                    negative_prompt="blurry",
                    width=width,
                    height=height,
                    seed=len(requests),
                    **speed.schedule(max_steps=steps),
                    adapters=scales,
                    face=path_face,
                    appearance_image=appearance,
                )
                inpainting = dataclasses.replace(
                    settings, init_image=Image.new("RGB", (width, height), "grey"), mask_image=mask
                )
                requests += [settings, inpainting]
    return requests


def warm_up(
    pipeline: CharacterPipeline,
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
    for settings in warm_up_requests(sizes, steps, appearance_with_face, pipeline.id_token_width):
        pipeline.generate(settings)
        runs += 1
    result = WarmUp(
        runs=runs,
        seconds=time.perf_counter() - started,
        # False when a compile error switched the UNet back to eager (logged by compilation.py).
        compiled=pipeline.compiled,
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
