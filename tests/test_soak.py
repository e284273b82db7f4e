"""The soak: 200 sequential predictions, successes and errors mixed, against one live server of its own.

It owns the long-run properties of the server: the worker's resident memory stays flat after warm-up, the
temporary folder does not grow with the number of requests, every error is the expected clear one, and no
request's settings leak into the next (the first requests, repeated at the end, give the same pixels).
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from tests.helpers.cog_server import CogServer, running_cog_server
from tests.helpers.images import cartoon_robot, data_uri, decode_image, pixels, png_bytes

pytestmark = [pytest.mark.server, pytest.mark.soak]

PREDICTIONS = 200
# Long enough to run every variant of success once (sizes, references, inpainting): checked in the test.
WARM_UP = 60
RSS_WINDOW = 20
MAX_RSS_GROWTH_MB = 100
# One success in five: a success takes about 3-6 s here and an error well under one, which keeps the soak
# at about 3 minutes on 2 CPU cores while still running 40 images through every stage.
SUCCESS_EVERY = 5
FAST = {"rendering_speed": "Turbo", "magic_prompt_option": "Off"}
# Nothing listens on port 1 of loopback: Cog's download of this URL fails at once, before the predictor.
UNREACHABLE_URL = "http://127.0.0.1:1/reference.png"


@dataclass(frozen=True)
class Planned:
    """One request of the soak and what it must give: `succeeded`, `failed` with `error` in the message, or
    HTTP 422 naming `error` as the field."""

    name: str
    inputs: dict
    outcome: str
    error: str = ""


@dataclass
class Images:
    face: str
    cartoon: str
    photo: str
    mask: str
    white_mask: str
    blank: str
    not_an_image: str = field(default="data:image/png;base64," + base64.b64encode(b"not a picture").decode())
    truncated: str = ""


def soak_images(portrait: Image.Image) -> Images:
    photo = portrait.resize((256, 256))
    mask = Image.new("L", photo.size, 255)
    mask.paste(0, (64, 64, 192, 192))
    truncated = "data:image/png;base64," + base64.b64encode(png_bytes(photo)[:2000]).decode()
    return Images(
        face=data_uri(portrait),
        cartoon=data_uri(cartoon_robot()),
        photo=data_uri(photo),
        mask=data_uri(mask),
        white_mask=data_uri(Image.new("L", photo.size, 255)),
        blank=data_uri(Image.new("RGB", (256, 256), (90, 120, 200))),
        truncated=truncated,
    )


def probes(images: Images) -> list[Planned]:
    """The requests sent first and again last: one per adapter path, with settings unlike their neighbours."""
    return [
        Planned(
            "probe-face",
            {"prompt": "a portrait", "character_reference_image": images.face,
             "style_type": "Realistic", "aspect_ratio": "3:4", "seed": 101, **FAST},
            "succeeded",
        ),
        Planned(
            "probe-cartoon",
            {"prompt": "the robot waving", "character_reference_image": images.cartoon,
             "style_type": "Fiction", "aspect_ratio": "16:9", "seed": 202, **FAST},
            "succeeded",
        ),
    ]  # fmt: skip


ASPECT_RATIOS = ("1:1", "16:9", "2:3", "4:5", "3:1")
# The shapes a success allocates: every size on both adapter paths, and inpainting on both (12 variants).
SUCCESS_VARIANTS = [
    (aspect_ratio, reference, False) for aspect_ratio in ASPECT_RATIOS for reference in ("face", "cartoon")
] + [(None, "face", True), (None, "cartoon", True)]


def successes(images: Images, index: int) -> Planned:
    """The index-th success: it cycles through the variants; styles, prompts and seeds vary as well."""
    aspect_ratio, reference, inpaint = SUCCESS_VARIANTS[index % len(SUCCESS_VARIANTS)]
    inputs = {
        "prompt": f"the character, scene {index}",
        "character_reference_image": images.face if reference == "face" else images.cartoon,
        "style_type": ("Auto", "Fiction", "Realistic")[index % 3],
        "seed": 1000 + index,
        **FAST,
    }
    if inpaint:
        inputs.update(image=images.photo, mask=images.mask)
        return Planned("inpaint", inputs, "succeeded")
    return Planned("generate", {**inputs, "aspect_ratio": aspect_ratio}, "succeeded")


def errors(images: Images) -> list[Planned]:
    """Bad requests, each with the error it must give; sent in turn between the successes."""

    def bad(name: str, outcome: str, error: str, **inputs) -> Planned:
        return Planned(
            name, {"prompt": "x", "character_reference_image": images.face, **inputs}, outcome, error
        )

    reference = "character_reference_image"
    return [
        bad(
            "not-an-image",
            "failed",
            f"{reference} is not a readable image",
            **{reference: images.not_an_image},
        ),
        bad("blank", "failed", f"{reference} is blank", **{reference: images.blank}),
        bad("image-without-mask", "failed", "image was given without mask", image=images.photo),
        bad("mask-without-image", "failed", "mask was given without image", mask=images.mask),
        bad("white-mask", "failed", "mask is all white", image=images.photo, mask=images.white_mask, **FAST),
        bad("empty-prompt", "failed", "prompt is empty", prompt="   "),
        bad("truncated", "failed", f"{reference} is not a readable image", **{reference: images.truncated}),
        bad("unknown-aspect-ratio", "422", "aspect_ratio", aspect_ratio="7:3"),
        bad("no-such-file", "failed", f"{reference} names no file sent", **{reference: "reference.png"}),
        # Cog's own download error; it does not name the input (coglet words it).
        bad("unreachable-url", "failed", "Input validation error: ", **{reference: UNREACHABLE_URL}),
    ]


def soak_plan(images: Images) -> list[Planned]:
    """The probes, a fixed mix of successes and errors, then the probes again: PREDICTIONS requests."""
    first = probes(images)
    bad = errors(images)
    middle = []
    for index in range(PREDICTIONS - 2 * len(first)):
        if index % SUCCESS_EVERY == 0:
            middle.append(successes(images, index // SUCCESS_EVERY))
        else:
            middle.append(bad[index % len(bad)])
    return first + middle + first


def check(planned: Planned, response) -> dict:
    if planned.outcome == "422":
        assert response.status_code == 422, (planned.name, response.text[:1000])
        assert planned.error in [error["loc"][-1] for error in response.json()["detail"]]
        return {}
    assert response.status_code == 200, (planned.name, response.text[:1000])
    body = response.json()
    assert body["status"] == planned.outcome, (planned.name, body.get("error"))
    if planned.outcome == "failed":
        assert planned.error in body["error"], (planned.name, body["error"])
        assert "Traceback" not in body["error"]
    return body


def worker_process(server: CogServer) -> psutil.Process:
    """coglet's worker: the Python child of the server process that runs setup() and every prediction."""
    (worker,) = [
        child
        for child in psutil.Process(server.pid).children(recursive=True)
        if "_run_worker" in " ".join(child.cmdline())
    ]
    return worker


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def soak_server(tiny_weights, tmp_path_factory) -> Iterator[tuple[CogServer, Path]]:
    """A server of its own, whose worker's temporary folder is a test folder, so that every file in it
    comes from this server."""
    temporary = tmp_path_factory.mktemp("soak-tmp")
    log_path = tmp_path_factory.mktemp("soak-server") / "server.log"
    with running_cog_server(tiny_weights, log_path, TMPDIR=str(temporary)) as server:
        assert server.health()["status"] == "READY", server.health()["setup"].get("logs", "")[-5000:]
        yield server, temporary


def megabytes(process: psutil.Process) -> float:
    return process.memory_info().rss / 1e6


def variant(planned: Planned) -> tuple:
    """What sets the shapes a request allocates: its kind, size, reference and mode."""
    inputs = planned.inputs
    return (
        planned.outcome,
        inputs.get("aspect_ratio"),
        inputs["character_reference_image"][:64],
        "mask" in inputs,
    )


def test_soak_memory_temporary_files_and_no_leak_between_requests(soak_server, portrait):
    server, temporary = soak_server
    worker = worker_process(server)
    plan = soak_plan(soak_images(portrait))
    assert len(plan) == PREDICTIONS
    # The warm-up must have run every variant once: each new image size or path allocates buffers that
    # stay (caches of torch and the libraries), which is growth the issue excludes ("after warm-up").
    assert {variant(p) for p in plan[WARM_UP:]} <= {variant(p) for p in plan[:WARM_UP]}
    first_images: dict[str, np.ndarray] = {}
    rss: list[float] = []
    unreachable_after_warm_up = 0
    for number, planned in enumerate(plan, start=1):
        body = check(planned, server.predict(**planned.inputs))
        if planned.name.startswith("probe-"):
            image = pixels(decode_image(body["output"]))
            if number <= 2:
                first_images[planned.name] = image
            else:
                # Same inputs and seed after 196 requests of other settings: the same pixels.
                assert np.array_equal(image, first_images[planned.name]), planned.name
        rss.append(megabytes(worker))
        if number == WARM_UP:
            files_at_warm_up = files_under(temporary)
        if number > WARM_UP and planned.name == "unreachable-url":
            unreachable_after_warm_up += 1
    assert server.settles_ready()
    assert worker.is_running() and worker_process(server).pid == worker.pid, "the worker was restarted"

    # The trend is the median of a window of 20 requests, after warm-up and at the end, so that one request's
    # transient buffers do not decide it (model/memory.py returns freed memory after each request).
    after_warm_up = statistics.median(rss[WARM_UP : WARM_UP + RSS_WINDOW])
    at_end = statistics.median(rss[-RSS_WINDOW:])
    files_at_end = files_under(temporary)
    print(f"\nWorker RSS (MB) every 10 requests: {[round(value) for value in rss[9::10]]}")
    print(
        f"Median RSS: {after_warm_up:.0f} MB after warm-up, {at_end:.0f} MB at the end, peak {max(rss):.0f}"
    )
    print(f"Files under TMPDIR: {len(files_at_warm_up)} after warm-up, {len(files_at_end)} at the end")
    assert at_end - after_warm_up < MAX_RSS_GROWTH_MB, [round(value) for value in rss]

    # Ours: the predictor keeps only the last output (model/service.py).
    outputs = [name for name in files_at_end if name.startswith("character-")]
    assert len(outputs) <= 1, outputs
    # Cog's: coglet removes its input files after each prediction, except when a download fails: then the
    # empty file of the failed download stays (one per such request here; a coglet 0.23.1 bug, see
    # docs/RELIABILITY.md).
    # Nothing else may accumulate.
    new_files = sorted(set(files_at_end) - set(files_at_warm_up) - set(outputs))
    print(
        f"Cog's leftovers since warm-up: {len(new_files)}, after {unreachable_after_warm_up} failed downloads"
    )
    assert all(name.startswith("tmp") for name in new_files), new_files
    assert len(new_files) <= unreachable_after_warm_up, new_files
