"""One request, end to end: reference -> identity -> prompt -> pipeline -> composite -> scored PNG.

CharacterService is what the Cog predictor holds: it loads every component once in `load()` and
turns each Request into an image file. It keeps no state from one request to the next.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.identity import FaceAnalyzer
from model.images import load_image, load_mask
from model.inpaint import InpaintPlan
from model.layout import WeightsLayout
from model.pipeline import CharacterPipeline, GenerationSettings
from model.request import Request
from model.speeds import SPEEDS
from model.styles import styles
from model.weights import check_weights

log = logging.getLogger(__name__)

RecordMetric = Callable[[str, Any], None]


def serving_device() -> tuple[torch.device, torch.dtype]:
    """fp16 on a CUDA GPU; fp32 on the CPU, where half precision is slow and lossy."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


@dataclass
class CharacterService:
    layout: WeightsLayout
    faces: FaceAnalyzer
    pipeline: CharacterPipeline

    @classmethod
    def load(cls, weights_dir: str | Path) -> CharacterService:
        layout = WeightsLayout(Path(weights_dir))
        manifest = check_weights(layout)
        log.info("Loading %s weights from %s", manifest.profile, layout.root)
        device, dtype = serving_device()
        return cls(
            layout=layout,
            faces=FaceAnalyzer(layout.face_analysis),
            pipeline=CharacterPipeline.load(layout, device=device, dtype=dtype),
        )

    def generate(self, request: Request, record_metric: RecordMetric | None = None) -> Path:
        record_metric = record_metric or (lambda key, value: None)
        started = time.perf_counter()
        log.info("Generating...")
        identity = self.faces.analyze(load_image(request.reference_image, "character_reference_image"))

        style = styles()[request.style_type]
        prompt = request.prompt
        log.info("Prompt used: %s", prompt)

        plan = None
        if request.inpaint is not None:
            plan = InpaintPlan.prepare(
                load_image(request.inpaint.image, "image"), load_mask(request.inpaint.mask, "mask")
            )
            size = plan.working_size
        else:
            size = request.size
        speed = SPEEDS[request.rendering_speed]
        settings = GenerationSettings(
            prompt=style.apply(prompt),
            negative_prompt=style.negative_prompt,
            width=size.width,
            height=size.height,
            seed=request.seed,
            num_inference_steps=speed.num_inference_steps,
            guidance_scale=speed.guidance_scale,
            ip_adapter_scale=speed.ip_adapter_scale,
            faceid_lora_scale=speed.faceid_lora_scale,
            face_structure_scale=speed.face_structure_scale,
            init_image=plan.working_image if plan else None,
            mask_image=plan.working_mask if plan else None,
        )

        def on_step(step: int, total: int) -> None:
            record_metric("denoising_step", step)

        image = self.pipeline.generate(identity.embedding, identity.face_crop, settings, on_step=on_step)
        if plan is not None:
            image = plan.composite(image)

        self._score_identity(image, identity.embedding, record_metric)
        output = Path(tempfile.mkdtemp(prefix="character-")) / "output.png"
        image.save(output, format="PNG")
        log.info("Image generation took %.2f seconds", time.perf_counter() - started)
        return output

    def _score_identity(self, image, reference_embedding, record_metric: RecordMetric) -> None:
        """Log how close the output's largest face is to the reference (cosine of ArcFace embeddings)."""
        embedding = self.faces.embed_largest_face(image)
        if embedding is None:
            log.info("Identity similarity: no face in output")
            return
        similarity = self.faces.cosine_similarity(reference_embedding, embedding)
        log.info("Identity similarity: %.2f", similarity)
        record_metric("identity_similarity", round(float(similarity), 4))
