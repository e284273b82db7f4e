"""CharacterService's setup on the tiny profile: the face models and the safety checker are warmed in it, as a
stage of its own, and the first request after it works."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from model.inputs.request import NO_RESOLUTION, build_request
from model.service import CharacterService, ServiceOptions, warm_faces_and_safety

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tiny_weights):
    """A fresh service (PuLID, the default), and the log of its setup."""
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    logger = logging.getLogger("model.service")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        service = CharacterService.load(tiny_weights, ServiceOptions())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return service, [record.getMessage() for record in records]


def test_setup_warms_the_face_models_and_the_safety_checker_as_its_last_stage(loaded):
    service, messages = loaded
    assert service.pulid is not None and service.safety is not None
    assert list(service.setup_seconds)[-1] == "warm_faces_and_safety"
    assert service.setup_seconds["warm_faces_and_safety"] > 0
    warmed = "Warmed up face analysis and the safety checker in "
    assert any(message.startswith(warmed) for message in messages)
    (summary,) = [message for message in messages if message.startswith("Setup seconds: ")]
    assert "warm_faces_and_safety" in summary


def test_the_first_request_after_setup_works(loaded, portrait, tmp_path):
    service, _ = loaded
    portrait.save(tmp_path / "reference.png")
    request = build_request(
        prompt="a woman reading in a cafe",
        character_reference_image=tmp_path / "reference.png",
        image=None,
        mask=None,
        seed=3,
        resolution=NO_RESOLUTION,
        style_type="Auto",
        aspect_ratio="1:1",
        rendering_speed="Turbo",
        magic_prompt_option="Off",
    )
    with Image.open(service.generate(request)) as image:
        assert image.mode == "RGB" and image.size[0] > 0


def test_the_warm_up_runs_every_face_model_and_never_fails_on_a_flagged_image(loaded, monkeypatch):
    service, _ = loaded
    calls = []
    for name, analyzer in (("buffalo_l", service.faces), ("antelopev2", service.pulid.faces)):
        for method in ("find_identity", "face_at"):
            original = getattr(analyzer, method)

            def recording(*args, _original=original, _name=f"{name}.{method}"):
                calls.append(_name)
                return _original(*args)

            monkeypatch.setattr(analyzer, method, recording)
    encode = service.pulid.encode
    monkeypatch.setattr(service.pulid, "encode", lambda *args: calls.append("pulid.encode") or encode(*args))
    # A checker that flags everything: check() would raise; the warm-up asks flags() only.
    monkeypatch.setattr(service.safety, "flags", lambda image: calls.append("safety.flags") or True)
    warm_faces_and_safety(service.faces, service.pulid, service.safety, torch.device("cpu"))
    assert calls == [
        "buffalo_l.find_identity",
        "buffalo_l.face_at",
        "antelopev2.find_identity",
        "antelopev2.face_at",
        "safety.flags",
    ]
    calls.clear()
    # On CUDA PuLID's torch face models run too (here on the CPU, where its models are).
    warm_faces_and_safety(service.faces, service.pulid, service.safety, torch.device("cuda"))
    assert "pulid.encode" in calls and calls[-1] == "safety.flags"
