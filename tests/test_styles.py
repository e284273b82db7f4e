"""Style types: the presets' table, Auto's choice on a table of prompts, and how styles scale identity."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from model.generation.settings import AdapterScales
from model.generation.speeds import SPEEDS
from model.prompting.styles import AUTO, choose_style, style_types, styles

AUTO_TABLE = [
    ("an anime girl with silver hair", "Fiction"),
    ("a watercolor painting of a fox in a forest", "Fiction"),
    ("the character as a wizard casting a spell, fantasy art", "Fiction"),
    ("a 3d render of a robot in a spaceship", "Fiction"),
    ("pixel art of a knight", "Fiction"),
    ("a cartoon dog", "Fiction"),
    ("un dessin animé d'un chat", "Fiction"),
    ("ein Mann als Zeichentrick Figur", "Fiction"),
    ("アニメの女の子", "Fiction"),
    ("一个卡通男孩", "Fiction"),
    ("a close up photo of a woman in a fashion magazine photoshoot", "Realistic"),
    ("a candid street photography shot of a man, 35mm", "Realistic"),
    ("a realistic portrait photo, bokeh", "Realistic"),
    ("a woman in a garden", "Realistic"),  # no cue: the default
    ("a man in a pink shirt", "Realistic"),  # "ink" is not a cue inside "pink"
    ("Marie Curie", "Realistic"),
    ("una fotografía de un hombre en la playa", "Realistic"),
    ("一张女孩的照片", "Realistic"),
    ("a photo of a cosplayer dressed as an anime character", "Realistic"),  # photo vs anime: tie -> default
]


@pytest.mark.parametrize(("prompt", "expected"), AUTO_TABLE)
def test_auto_chooses_a_preset_from_the_prompt_and_logs_it(prompt, expected, caplog):
    with caplog.at_level(logging.INFO, logger="model.prompting.styles"):
        assert choose_style(AUTO, prompt).name == expected
    assert f"Style: Auto chose {expected}" in caplog.text


@pytest.mark.parametrize("name", ["Fiction", "Realistic"])
def test_a_named_style_is_used_as_is(name):
    assert choose_style(name, "an anime photo").name == name


def test_every_preset_has_a_template_with_the_prompt_and_a_negative_prompt():
    assert style_types() == ["Auto", "Fiction", "Realistic"]
    for style in styles().values():
        assert style.apply("PROMPT").startswith("PROMPT") and style.negative_prompt


@pytest.mark.parametrize("speed", list(SPEEDS))
def test_styles_multiply_the_speeds_adapter_scales(speed):
    base = SPEEDS[speed]
    realistic = styles()["Realistic"].adapter_scales(base)
    fiction = styles()["Fiction"].adapter_scales(base)
    assert realistic == base.adapters
    # Fiction loosens the photo-like face structure so that the style can change the drawing.
    assert fiction.face_structure < realistic.face_structure
    names = [field.name for field in dataclasses.fields(AdapterScales)]
    assert all(0 < getattr(fiction, name) <= getattr(realistic, name) for name in names)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("the character at the beach", "Fiction"),  # no cues: leans to Fiction without a face
        ("an anime scene at the beach", "Fiction"),
        ("a candid photo at the beach", "Realistic"),  # the prompt's own cues still decide
    ],
)
def test_auto_leans_to_fiction_when_the_reference_has_no_human_face(prompt, expected, caplog):
    with caplog.at_level(logging.INFO, logger="model.prompting.styles"):
        assert choose_style(AUTO, prompt, reference_has_face=False).name == expected
    assert f"Style: Auto chose {expected}" in caplog.text
    # With a face, a prompt without cues keeps the Realistic default.
    assert choose_style(AUTO, "the character at the beach").name == "Realistic"
