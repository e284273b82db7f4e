"""One request, end to end: reference -> identity -> prompt -> pipeline -> composite -> scored PNG.

CharacterService is what the Cog predictor holds: it loads every component once in `load()` and
turns each Request into an image file. It keeps no state from one request to the next.
"""

from __future__ import annotations

import logging
import os
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
from model.magic_prompt import PromptRewriter, magic_prompt
from model.pipeline import CharacterPipeline, GenerationSettings
from model.request import Request
from model.safety import SafetyChecker, load_safety_checker
from model.speeds import SPEEDS
from model.styles import choose_style
from model.timing import StageTimer
from model.weights import check_weights

log = logging.getLogger(__name__)

RecordMetric = Callable[[str, Any], None]
# A log line every few denoising steps (and the last): webhook clients see progress, the logs stay short.
STEP_LOG_EVERY = 5


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
    rewriter: PromptRewriter
    # None when CHARACTER_SAFETY_CHECKER=off (model/safety.py).
    safety: SafetyChecker | None = None

    @classmethod
    def load(cls, weights_dir: str | Path) -> CharacterService:
        layout = WeightsLayout(Path(weights_dir))
        manifest = check_weights(layout)
        log.info("Loading %s weights from %s", manifest.profile, layout.root)
        device, dtype = serving_device()
        timer = StageTimer()
        faces = FaceAnalyzer(layout.face_analysis)
        timer.lap("load_faces")
        pipeline = CharacterPipeline.load(layout, device=device, dtype=dtype)
        timer.lap("load_pipeline")
        rewriter = PromptRewriter.load(layout, device=device)
        timer.lap("load_prompt_model")
        safety = load_safety_checker(layout.safety_checker, os.environ, device, dtype)
        timer.lap("load_safety_checker")
        log.info("Setup seconds: %s", timer.summary())
        return cls(layout=layout, faces=faces, pipeline=pipeline, rewriter=rewriter, safety=safety)

    def generate(self, request: Request, record_metric: RecordMetric | None = None) -> Path:
        record_metric = record_metric or (lambda key, value: None)
        started = time.perf_counter()
        timer = StageTimer()
        log.info("Generating...")
        reference = load_image(request.reference_image, "character_reference_image")
        timer.lap("read_inputs")
        identity = self.faces.analyze(reference)
        timer.lap("face_analysis")

        # "Prompt used" is the prompt after the magic prompt and before the style template, as Ideogram
        # shows it: sent back with magic_prompt_option=Off, the logged style and the seed, it gives the
        # same image. The style line says what the template adds.
        prompt = magic_prompt(self.rewriter, request.magic_prompt_option, request.prompt, request.seed)
        style = choose_style(request.style_type, request.prompt)
        log.info("Prompt used: %s", prompt)
        log.info("Style: %s (%s)", style.name, style.apply("{prompt}"))
        timer.lap("prompt")

        plan = None
        if request.inpaint is not None:
            plan = InpaintPlan.prepare(
                load_image(request.inpaint.image, "image"), load_mask(request.inpaint.mask, "mask")
            )
            size = plan.working_size
            timer.lap("read_inputs")
        else:
            size = request.size
        speed = SPEEDS[request.rendering_speed]
        settings = GenerationSettings(
            prompt=style.apply(prompt),
            negative_prompt=style.negative_prompt,
            width=size.width,
            height=size.height,
            seed=request.seed,
            **speed.schedule(),
            # The speed sets the identity-adapter scales; the style multiplies them (model/styles.py).
            **style.identity_scales(speed),
            init_image=plan.working_image if plan else None,
            mask_image=plan.working_mask if plan else None,
        )

        def on_step(step: int, total: int) -> None:
            record_metric("denoising_step", step)
            if step == total or step % STEP_LOG_EVERY == 0:
                log.info("Step %d/%d", step, total)
            if step == total:
                # The pipeline decodes the latents after its last step: split the call there.
                timer.lap("denoise")

        image = self.pipeline.generate(identity.embedding, identity.face_crop, settings, on_step=on_step)
        timer.lap("decode")
        if plan is not None:
            image = plan.composite(image)
            timer.lap("composite")

        self._score_identity(image, identity.embedding, record_metric)
        timer.lap("identity_score")
        if self.safety is not None:
            self.safety.check(image)
            timer.lap("safety_check")
        output = Path(tempfile.mkdtemp(prefix="character-")) / "output.png"
        # zlib level 1: on a 1024x1024 photo about 5x faster than PIL's default 6 (0.07 s against 0.34 s
        # on one CPU core) for a file about 13% larger; PNG stays lossless either way.
        image.save(output, format="PNG", compress_level=1)
        timer.lap("encode_output")
        timer.record(record_metric)
        log.info("Stage seconds: %s", timer.summary())
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
