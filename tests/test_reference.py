"""The character reference stage: which path a reference takes, and the images each path reads."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image
from skimage import data

from model.errors import InputError
from model.generation.settings import AdapterScales
from model.identity.reference import (
    REFERENCE_INPUT,
    check_not_blank,
    head_and_shoulders,
    read_reference,
    subject_region,
)
from tests.helpers.images import cartoon_robot

STYLE_SCALES = AdapterScales(ip_adapter=0.9, faceid_lora=0.8, face_structure=0.6, appearance=0.6)


def white_page_with_a_speck() -> Image.Image:
    page = Image.new("RGB", (506, 506), (255, 255, 255))
    page.paste((0, 0, 0), (250, 250, 256, 256))
    return page


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (640, 480), (30, 120, 200)),
        Image.new("RGB", (64, 64), (255, 255, 255)),
        # Almost one colour: a white page with a small dark speck, and faint noise.
        white_page_with_a_speck(),
        Image.fromarray(np.random.default_rng(0).normal(128, 2, (300, 300, 3)).clip(0, 255).astype(np.uint8)),
    ],
    ids=["one-colour", "white", "speck", "faint-noise"],
)
def test_blank_references_are_refused_naming_the_input(image):
    with pytest.raises(InputError, match="^character_reference_image is blank .*shows the character"):
        check_not_blank(image, "character_reference_image")


@pytest.mark.parametrize(
    "image",
    [Image.fromarray(data.astronaut()), cartoon_robot(), Image.fromarray(data.camera()).convert("RGB")],
    ids=["photo", "cartoon", "grey-photo"],
)
def test_pictures_are_not_blank(image):
    check_not_blank(image, "character_reference_image")


def test_subject_region_bounds_a_character_on_a_plain_background():
    region = subject_region(cartoon_robot())
    # The robot spans x 150-360 and y 120-520 (plus outline): a 400 px tall box, 6 % margin, squared.
    assert region.width == region.height
    assert 400 <= region.width <= 460
    # Padded with the background colour, so the corners are white and the centre is the robot.
    assert region.getpixel((0, 0)) == (255, 255, 255)
    assert region.getpixel((region.width // 2, region.height // 2)) != (255, 255, 255)


def test_subject_region_of_a_busy_picture_is_the_whole_picture():
    photo = Image.fromarray(data.coffee())  # 600 x 400, no plain border
    region = subject_region(photo)
    # The photo whole in the middle, reduced to the 448 px an appearance crop keeps (twice the encoder's 224).
    assert region.size == (448, 448)
    reduced = photo.copy()
    reduced.thumbnail((448, 448), Image.Resampling.LANCZOS)
    top = (448 - reduced.height) // 2
    assert np.array_equal(np.asarray(region)[top : top + reduced.height], np.asarray(reduced))


def test_a_thin_reference_is_reduced_before_it_is_padded_to_a_square():
    # 12000 x 1000: padded at full size this was a 12000 x 12000 square for a 224-px encoder input.
    strip = Image.fromarray(np.tile(data.coffee(), (3, 20, 1))[:1000, :12000])
    region = subject_region(strip)
    assert region.size == (448, 448)


def test_head_and_shoulders_is_a_square_inside_the_image_around_the_face():
    photo = Image.fromarray(data.astronaut())
    crop = head_and_shoulders(photo, (170.0, 60.0, 270.0, 190.0))
    assert crop.width == crop.height
    # 3 face widths wide (300), from 0.6 heights above (y -18 -> 0) to 1.8 below (y 424): 424 tall.
    assert crop.width == 424


def test_a_human_photo_takes_the_face_path(faces):
    reference = read_reference(Image.fromarray(data.astronaut()), faces)
    assert reference.has_face and reference.appearance_image is None and reference.no_face_reason is None
    scales = reference.adapter_scales(STYLE_SCALES, appearance_scale_with_face=0.0)
    assert scales == AdapterScales(ip_adapter=0.9, faceid_lora=0.8, face_structure=0.6, appearance=0.0)
    assert reference.face.embedding is reference.identity.embedding
    assert reference.face.face_crop is reference.identity.face_crop


def test_a_cartoon_takes_the_appearance_path_and_says_so(faces, caplog):
    with caplog.at_level(logging.INFO, logger="model.identity.reference"):
        reference = read_reference(cartoon_robot(), faces)
    assert not reference.has_face
    assert (
        "No human face found in character_reference_image; "
        "using the whole image as the character's appearance" in caplog.text
    )
    assert reference.appearance_image.width == reference.appearance_image.height
    assert reference.adapter_scales(STYLE_SCALES, appearance_scale_with_face=0.3) == AdapterScales(
        ip_adapter=0.0, faceid_lora=0.0, face_structure=0.0, id_scale=0.0, num_zero=0, appearance=0.6
    )
    assert reference.face is None


def test_a_face_too_small_for_arcface_takes_the_appearance_path(faces, caplog):
    with caplog.at_level(logging.INFO, logger="model.identity.reference"):
        reference = read_reference(Image.fromarray(data.astronaut()).resize((128, 128)), faces)
    assert not reference.has_face
    assert "is only" in reference.no_face_reason and "pixels wide" in caplog.text


def test_appearance_beside_faceid_reads_the_head_and_shoulders_when_configured(faces):
    reference = read_reference(Image.fromarray(data.astronaut()), faces, appearance_with_face=True)
    assert reference.has_face and reference.appearance_image is not None
    scales = reference.adapter_scales(STYLE_SCALES, appearance_scale_with_face=0.3)
    assert scales == AdapterScales(ip_adapter=0.9, faceid_lora=0.8, face_structure=0.6, appearance=0.3)


def test_blank_reference_is_refused():
    # The service calls this while it reads the inputs, before any model (tests/test_masks.py spies on that).
    with pytest.raises(InputError, match="blank"):
        check_not_blank(Image.new("RGB", (512, 512), (90, 120, 200)), REFERENCE_INPUT)
