"""One request, end to end: reference -> face or appearance -> prompt -> pipeline -> composite -> scored PNG.

The face goes to the identity adapter chosen at setup (ServiceOptions.identity_adapter): PuLID v1.1, whose
ID tokens model/identity/pulid/extraction.py makes from the reference, or FaceID Plus v2.

CharacterService is what the Cog predictor holds: it loads every component once in `load()` and
turns each Request into an image file. It keeps nothing from one request to the next but the folder of the
last output, which the next request removes. Its settings come from ServiceOptions (model/options.py), read
from the environment once, at setup.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from insightface.utils import face_align
from PIL import Image

from model.generation.pipeline import CharacterPipeline
from model.generation.settings import AdapterScales, FaceCondition, GenerationSettings, IDTokens
from model.generation.speeds import SPEEDS
from model.generation.warm_up import WARM_UP_STEPS
from model.identity.faces import FaceAnalyzer
from model.identity.pulid.extraction import PuLIDEncoder
from model.identity.reference import (
    REFERENCE_INPUT,
    REFERENCE_PIXELS,
    CharacterReference,
    check_not_blank,
    read_reference,
)
from model.inputs.images import load_image, load_mask, profile_name, to_srgb
from model.inputs.inpaint import InpaintPlan
from model.inputs.masks import read_mask
from model.inputs.request import Request
from model.memory import release_freed_memory
from model.options import PULID, ServiceOptions
from model.prompting.magic_prompt import magic_prompt
from model.prompting.rewriter import PromptRewriter
from model.prompting.styles import choose_style
from model.safety import SafetyChecker, load_safety_checker
from model.timing import StageTimer
from model.weights.checks import check_weights
from model.weights.layout import WeightsLayout

log = logging.getLogger(__name__)

RecordMetric = Callable[[str, Any], None]
# A log line every few denoising steps (and the last): webhook clients see progress, the logs stay short.
STEP_LOG_EVERY = 5


# The stand-in the face models and the safety checker are warmed on: noise, at the detector's working size,
# with five landmarks where ArcFace's template puts a face's, scaled to fill it. The models' input shapes
# are fixed (the detector's 640 x 640, ArcFace's 112 x 112 crop, the checker's 224 x 224), so any image
# warms the shapes of every request.
WARM_UP_IMAGE_SIZE = 640
WARM_UP_LANDMARKS = face_align.arcface_dst * (WARM_UP_IMAGE_SIZE / 112)


def warm_faces_and_safety(
    faces: FaceAnalyzer, pulid: PuLIDEncoder | None, safety: SafetyChecker | None, device: torch.device
) -> None:
    """Run the face models (buffalo_l's detector and recognizer, and PuLID's) and the safety checker once
    on a stand-in image, so that their first-call costs fall in setup.

    PuLID's torch face models (the parser, EVA-CLIP, the IDFormer) only on CUDA, where their first call
    selects cuDNN's kernels: on the CPU there is no such cost, and on the tiny profile they take 0.55 s a
    call (the parser at 512 px), which every setup of the tests would add for nothing.
    """
    rng = np.random.default_rng(0)
    size = WARM_UP_IMAGE_SIZE
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
    started = time.perf_counter()
    for analyzer in (faces, pulid.faces) if pulid is not None else (faces,):
        # The detector runs whole on any image; the recognizer on a face, here at the stand-in landmarks.
        analyzer.find_identity(image, "the warm-up image")
        analyzer.face_at(image, WARM_UP_LANDMARKS)
    if pulid is not None and device.type == "cuda":
        # As for a face antelopev2 missed: embedded at the given landmarks, then parsed, EVA, IDFormer.
        pulid.encode(image, WARM_UP_LANDMARKS)
    if safety is not None:
        # flags(), not check(): a checker with random weights may flag grey, and setup must not fail on it.
        safety.flags(Image.new("RGB", (size, size), (128, 128, 128)))
    log.info("Warmed up face analysis and the safety checker in %.2f s", time.perf_counter() - started)


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
    options: ServiceOptions = field(default_factory=ServiceOptions)
    # None when the safety checker is switched off (model/safety.py).
    safety: SafetyChecker | None = None
    # PuLID's face-side models; None when the identity adapter is FaceID.
    pulid: PuLIDEncoder | None = None
    # The seconds of each setup stage of load() (load_faces, load_pipeline, warm_up on CUDA, ...).
    setup_seconds: dict[str, float] = field(default_factory=dict)
    # At most this many denoising steps per request, whatever the speed (None: the speed's own). Only
    # the benchmark's smoke run sets it, to run every code path in seconds on a CPU; the server never does.
    max_steps: int | None = None
    # Cog reads the output file after run() returns, so a request's output can only be removed later: each
    # request removes the previous one's folder (a container runs one prediction at a time), so the temporary
    # folder holds at most one output however long the server runs.
    _previous_output: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(
        cls, weights_dir: str | Path, options: ServiceOptions | None = None, max_steps: int | None = None
    ) -> CharacterService:
        """Every component, once. Options default to the environment's, so every entry point (the Cog
        predictor, the demo, the benchmark, the evaluation) honours the same switches; `weights_dir` is
        the folder to load (it overrides options.weights_dir); max_steps caps every speed's steps (the
        benchmark's smoke run) and is warmed up with that cap too."""
        # Read first: a bad value fails setup before minutes of loading.
        options = options if options is not None else ServiceOptions.from_environment()
        layout = WeightsLayout(Path(weights_dir))
        manifest = check_weights(layout)
        log.info("Loading %s weights from %s", manifest.profile, layout.root)
        device, dtype = serving_device()
        timer = StageTimer()
        faces = FaceAnalyzer(layout.face_analysis)
        timer.lap("load_faces")
        pulid = PuLIDEncoder.load(layout, device, dtype) if options.identity_adapter == PULID else None
        if pulid is not None:
            timer.lap("load_pulid")
        pipeline = CharacterPipeline.load(
            layout,
            device=device,
            dtype=dtype,
            compile=options.torch_compile,
            compile_cache_dir=options.compile_cache_dir,
            identity_adapter=options.identity_adapter,
        )
        timer.lap("load_pipeline")
        if device.type == "cuda":
            # Every speed and path once before the server reports ready: the compilation (unless
            # CHARACTER_TORCH_COMPILE=0) and the first-call work of CUDA happen here, not in a request.
            # Not on the CPU: nothing is compiled there, and the tests' setups stay short.
            pipeline.warm_up(
                steps=min(WARM_UP_STEPS, max_steps or WARM_UP_STEPS),
                appearance_with_face=options.appearance_scale_with_face,
            )
            timer.lap("warm_up")
        rewriter = PromptRewriter.load(layout, device=device)
        timer.lap("load_prompt_model")
        safety = load_safety_checker(layout.safety_checker, options.safety_checker, device, dtype)
        timer.lap("load_safety_checker")
        # On every device: the models' first calls (onnxruntime's and cuDNN's setup, torch's first kernels)
        # happen here, not in the first request. On the CPU with the tiny profile this adds about 0.1 s
        # (FaceID) to 0.2-0.3 s (PuLID: two face folders) to setup, measured on 2 shared cores.
        warm_faces_and_safety(faces, pulid, safety, device)
        timer.lap("warm_faces_and_safety")
        log.info("Setup seconds: %s", timer.summary())
        log.info("Identity adapter for faces: %s", "PuLID v1.1" if pulid is not None else "FaceID Plus v2")
        if options.appearance_scale_with_face:
            log.info("Appearance adapter beside FaceID at %.2f", options.appearance_scale_with_face)
        return cls(
            layout=layout,
            faces=faces,
            pipeline=pipeline,
            rewriter=rewriter,
            safety=safety,
            pulid=pulid,
            options=options,
            setup_seconds=dict(timer.seconds),
            max_steps=max_steps,
        )

    def generate(self, request: Request, record_metric: RecordMetric | None = None) -> Path:
        self._remove_previous_output()
        timer = StageTimer()
        try:
            return self._generate(request, record_metric, timer)
        except Exception as error:
            # Where it failed, for the one sentence the client gets (model/errors.py): coglet returns no
            # logs with a failed prediction, and the stage is what a report of the failure needs first.
            with contextlib.suppress(AttributeError):  # an exception type without a __dict__
                error.failed_after_stage = next(reversed(timer.seconds), None)
            raise
        finally:
            # After every request, failed ones included (model/memory.py): a few ms against a denoising
            # loop of seconds.
            release_freed_memory()

    def _generate(self, request: Request, record_metric: RecordMetric | None, timer: StageTimer) -> Path:
        record_metric = record_metric or (lambda key, value: None)
        started = time.perf_counter()
        log.info("Generating...")
        # Every input is read and checked before the first model runs (face analysis, the LLM): a bad file
        # fails in a fraction of a second and costs no model time.
        reference_image, plan = self._read_inputs(request)
        timer.lap("read_inputs")
        reference = read_reference(
            reference_image, self.faces, appearance_with_face=self.options.appearance_scale_with_face > 0
        )
        timer.lap("face_analysis")
        face = self._face_condition(reference_image, reference, timer)

        # "Prompt used" is the prompt after the magic prompt and before the style template, as Ideogram
        # shows it: sent back with magic_prompt_option=Off, the logged style and the seed, it gives the
        # same image. The style line says what the template adds.
        prompt = magic_prompt(self.rewriter, request.magic_prompt_option, request.prompt, request.seed)
        style = choose_style(request.style_type, request.prompt, reference.has_face)
        log.info("Prompt used: %s", prompt)
        log.info("Style: %s (%s)", style.name, style.apply("{prompt}"))
        timer.lap("prompt")

        size = plan.working_size if plan is not None else request.size
        speed = SPEEDS[request.rendering_speed]
        # The speed sets the adapter scales, the style multiplies them (model/prompting/styles.py), and the
        # reference's path zeroes the adapter it does not use (model/identity/reference.py).
        scales = reference.adapter_scales(
            style.adapter_scales(speed), self.options.appearance_scale_with_face
        )
        scales = scales.for_pulid() if self.pulid is not None else scales.for_faceid()
        log.info("Adapters: %s", self._adapters_line(scales))
        settings = GenerationSettings(
            prompt=style.apply(prompt),
            negative_prompt=style.negative_prompt,
            width=size.width,
            height=size.height,
            seed=request.seed,
            **speed.schedule(self.max_steps),
            adapters=scales,
            face=face,
            appearance_image=reference.appearance_image,
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

        image = self.pipeline.generate(settings, on_step=on_step)
        timer.lap("decode")
        if plan is not None:
            image = plan.composite(image)
            timer.lap("composite")

        self._score_identity(image, reference, record_metric)
        timer.lap("identity_score")
        if self.safety is not None:
            self.safety.check(image)
            timer.lap("safety_check")
        output = Path(tempfile.mkdtemp(prefix="character-")) / "output.png"
        self._previous_output = output.parent
        # zlib level 1: on a 1024x1024 photo about 5x faster than PIL's default 6 (0.07 s against 0.34 s
        # on one CPU core) for a file about 13% larger; PNG stays lossless either way.
        image.save(output, format="PNG", compress_level=1)
        timer.lap("encode_output")
        timer.record(record_metric)
        log.info("Stage seconds: %s", timer.summary())
        log.info("Image generation took %.2f seconds", time.perf_counter() - started)
        return output

    def _face_condition(
        self, image: Image.Image, reference: CharacterReference, timer: StageTimer
    ) -> FaceCondition | IDTokens | None:
        """What the identity adapter reads of the reference's face: PuLID's ID tokens (its own face models,
        timed per stage) or FaceID's embedding and crop; None without a usable face."""
        if reference.identity is None:
            return None
        if self.pulid is None:
            return reference.face
        # The face analysis' landmarks are the fallback should antelopev2's detector miss the face.
        return self.pulid.encode(image, reference.identity.landmarks, timer)

    def _adapters_line(self, scales: AdapterScales) -> str:
        """The identity adapter and its scales, then the appearance adapter's, for the log."""
        if self.pulid is not None:
            face = f"PuLID {scales.id_scale:.2f} (num_zero {scales.zero_tokens})"
        else:
            face = (
                f"FaceID {scales.ip_adapter:.2f} (LoRA {scales.faceid_lora:.2f}, "
                f"structure {scales.face_structure:.2f})"
            )
        return f"{face}, appearance {scales.appearance:.2f}"

    @staticmethod
    def _read_inputs(request: Request) -> tuple[Image.Image, InpaintPlan | None]:
        """Load and check every file input, without any model: the reference (in sRGB, the models'
        colour space; refused when blank), and for inpainting the image and the mask
        (model/inputs/masks.py)."""
        loaded = load_image(request.reference_image, REFERENCE_INPUT, reduce_to_pixels=REFERENCE_PIXELS)
        reference_image = to_srgb(loaded)
        if reference_image is not loaded:
            log.info("%s: converted from its ICC profile (%s) to sRGB", REFERENCE_INPUT, profile_name(loaded))
        check_not_blank(reference_image, REFERENCE_INPUT)
        if request.inpaint is None:
            return reference_image, None
        image = load_image(request.inpaint.image, "image")
        reading = read_mask(load_mask(request.inpaint.mask, "mask"), image.size)
        plan = InpaintPlan.prepare(image, reading.mask)
        crop = plan.crop.size
        log.info(
            "Inpainting: denoising a %s region of the %dx%d image at %s (%.2fx its pixel density)%s",
            crop,
            image.width,
            image.height,
            plan.working_size,
            plan.density,
            f", converted from its ICC profile ({profile_name(image)}) to sRGB and back"
            if plan.icc_profile
            else "",
        )
        return reference_image, plan

    def _remove_previous_output(self) -> None:
        if self._previous_output is not None:
            shutil.rmtree(self._previous_output, ignore_errors=True)
            self._previous_output = None

    def _score_identity(self, image, reference: CharacterReference, record_metric: RecordMetric) -> None:
        """Log how close the output's largest face is to the reference's (cosine of ArcFace embeddings);
        only when both have a face, else why there is no score."""
        if reference.identity is None:
            log.info("Identity similarity: not scored (no human face in %s)", REFERENCE_INPUT)
            return
        embedding = self.faces.embed_largest_face(image)
        if embedding is None:
            log.info("Identity similarity: not scored (no face in output)")
            return
        similarity = self.faces.cosine_similarity(reference.identity.embedding, embedding)
        log.info("Identity similarity: %.2f", similarity)
        record_metric("identity_similarity", round(float(similarity), 4))
