"""The character reference: what carries the character into the image, a human face or its whole appearance.

Owns one rule and its image geometry. A reference with a usable human face goes through the identity adapter
chosen at setup (PuLID v1.1, whose ID tokens model/identity/pulid/extraction.py makes, or FaceID: the
largest face's ArcFace embedding and aligned crop); the face analysis here decides which references have
one. A reference without one (a cartoon hero, a mascot, an animal, a
masked figure, or a face too small for ArcFace) goes through the appearance adapter (IP-Adapter Plus), which
reads the subject's region of the image. A blank or near-uniform reference is refused: it has no character
to keep. When configured, the appearance adapter also reads a head-and-shoulders crop beside FaceID, to
carry hair and outfit; that is off by default until the evaluation script shows it helps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model.errors import InputError
from model.generation.settings import AdapterScales, FaceCondition
from model.identity.faces import FaceAnalyzer, Identity, NoUsableFace

log = logging.getLogger(__name__)

REFERENCE_INPUT = "character_reference_image"
# A larger reference photo is read at a reduced JPEG scale, keeping at least this many pixels
# (model/inputs/images.py): 12 megapixels keeps a typical phone photo (4000 x 3000) whole, and is far more
# than
# the stages read (the face detector works at 640 px, the face and appearance crops are 224 px).
REFERENCE_PIXELS = 12_000_000
# Spread of grey levels (0-255) below which an image is one colour, or almost: a white page with a speck
# is about 2.5; a low-key photo or a flat-coloured cartoon on white is well above 10.
BLANK_STD = 4.0
# Side of the copy on which the background and the subject's box are found (enough for a bounding box).
ANALYSIS_SIDE = 256
# A pixel belongs to the subject when a channel differs from the background colour by more than this.
SUBJECT_DIFFERENCE = 24
# A plain background: at least this share of the border pixels are within SUBJECT_DIFFERENCE of its median.
PLAIN_BORDER_SHARE = 0.8
# Room left around the subject's box, as a share of its longer side.
SUBJECT_MARGIN = 0.06
# Head and shoulders around a face box of width w and height h: 3w wide, from 0.6h above the box to 1.8h
# below it (the shoulders of a front-facing portrait).
HEAD_AND_SHOULDERS = {"width": 3.0, "above": 0.6, "below": 1.8}
# The longest side an appearance crop keeps before it is padded to a square: twice the 224 px the image
# encoder's processor resizes it to. Padding a thin 12000x1000 reference at full size made a 12000^2 square
# (and 1.7 GB of floats in the processor) for a 224-px input.
APPEARANCE_SIDE = 448


@dataclass(frozen=True, eq=False)
class CharacterReference:
    """What a request conditions on: a face identity, an appearance image, or both."""

    identity: Identity | None
    # What the appearance adapter reads: the subject's region without a face, the head and shoulders
    # with one when configured; None when the adapter is unused.
    appearance_image: Image.Image | None
    # Why the reference has no face identity (None when it has one).
    no_face_reason: str | None = None

    @property
    def has_face(self) -> bool:
        return self.identity is not None

    def adapter_scales(self, style_scales: AdapterScales, appearance_scale_with_face: float) -> AdapterScales:
        """The speed-and-style scales of the path this reference takes, zero where an adapter is unused.

        With a face: FaceID's scales, and the appearance adapter at appearance_scale_with_face on the
        head-and-shoulders crop when there is one (else 0). Without: FaceID off, the appearance adapter at
        the style's scale.
        """
        if self.has_face:
            appearance = appearance_scale_with_face if self.appearance_image is not None else 0.0
            return style_scales.with_appearance(appearance)
        return style_scales.without_face()

    @property
    def face(self) -> FaceCondition | None:
        """What FaceID reads of this reference: its face's embedding and aligned crop; None without a face
        (PuLID reads the reference image itself: CharacterService._face_condition)."""
        if self.identity is None:
            return None
        return FaceCondition(embedding=self.identity.embedding, face_crop=self.identity.face_crop)


def read_reference(
    image: Image.Image, faces: FaceAnalyzer, appearance_with_face: bool = False
) -> CharacterReference:
    """Decide the path for an RGB reference image and prepare what that path reads.

    The image has passed check_not_blank: the service checks every input before any model runs.
    """
    found = faces.find_identity(image, REFERENCE_INPUT)
    if isinstance(found, NoUsableFace):
        log.info("%s; using the whole image as the character's appearance", found.reason)
        return CharacterReference(
            identity=None, appearance_image=subject_region(image), no_face_reason=found.reason
        )
    appearance = head_and_shoulders(image, found.face_box) if appearance_with_face else None
    return CharacterReference(identity=found, appearance_image=appearance)


def check_not_blank(image: Image.Image, input_name: str) -> None:
    """InputError when the image is one colour, or almost: there is no character in it to keep."""
    grey = np.asarray(_small(image).convert("L"), dtype=np.float32)
    if float(grey.std()) < BLANK_STD:
        raise InputError(
            f"{input_name} is blank (one colour, or almost): send an image that shows the character"
        )


def subject_region(image: Image.Image) -> Image.Image:
    """The subject's box, with a margin, padded to a square with the background colour.

    On a plain background (most character sheets, stickers and cut-outs) the box bounds the pixels
    that differ from it; on a busy one (a photo, a scene) it is the whole image. Square, because the
    image encoder's processor crops the centre square and would cut a tall character's head and feet.
    """
    small = np.asarray(_small(image), dtype=np.int16)
    background = _plain_background(small)
    if background is None:
        return _pad_square(image, _border_median(small))
    subject = np.abs(small - np.asarray(background, dtype=np.int16)).max(axis=2) > SUBJECT_DIFFERENCE
    rows, columns = np.flatnonzero(subject.any(axis=1)), np.flatnonzero(subject.any(axis=0))
    if rows.size == 0:
        return _pad_square(image, background)
    scale_x, scale_y = image.width / small.shape[1], image.height / small.shape[0]
    left, right = columns[0] * scale_x, (columns[-1] + 1) * scale_x
    top, bottom = rows[0] * scale_y, (rows[-1] + 1) * scale_y
    margin = SUBJECT_MARGIN * max(right - left, bottom - top)
    box = (
        max(0, round(left - margin)),
        max(0, round(top - margin)),
        min(image.width, round(right + margin)),
        min(image.height, round(bottom + margin)),
    )
    return _pad_square(image.crop(box), background)


def head_and_shoulders(image: Image.Image, face_box: tuple[float, float, float, float]) -> Image.Image:
    """The head and shoulders around a face box, inside the image, padded to a square."""
    x1, y1, x2, y2 = face_box
    width, height = x2 - x1, y2 - y1
    centre = (x1 + x2) / 2
    half = HEAD_AND_SHOULDERS["width"] * width / 2
    box = (
        max(0, round(centre - half)),
        max(0, round(y1 - HEAD_AND_SHOULDERS["above"] * height)),
        min(image.width, round(centre + half)),
        min(image.height, round(y2 + HEAD_AND_SHOULDERS["below"] * height)),
    )
    return _pad_square(image.crop(box), _border_median(np.asarray(_small(image), dtype=np.int16)))


def _small(image: Image.Image) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    return small


def _border(small: np.ndarray) -> np.ndarray:
    """The outermost pixels of the analysis copy (an int16 RGB array), one row per pixel."""
    return np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])


def _border_median(small: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(value) for value in np.median(_border(small), axis=0))


def _plain_background(small: np.ndarray) -> tuple[int, int, int] | None:
    """The background colour when the border is (mostly) one colour, else None."""
    border = _border(small)
    median = np.median(border, axis=0)
    close = np.abs(border - median).max(axis=1) <= SUBJECT_DIFFERENCE
    if close.mean() < PLAIN_BORDER_SHARE:
        return None
    return tuple(int(value) for value in median)


def _pad_square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """The image, reduced to at most APPEARANCE_SIDE on its longer side, centred on a square of `colour`."""
    image = image.convert("RGB")
    if max(image.size) > APPEARANCE_SIDE:
        image = image.copy()
        image.thumbnail((APPEARANCE_SIDE, APPEARANCE_SIDE), Image.Resampling.LANCZOS)
    side = max(image.size)
    square = Image.new("RGB", (side, side), colour)
    square.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
    return square
