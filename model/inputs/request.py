"""Turning the Cog inputs into one validated, normalised request.

This module owns the rules of the contract that do not need a model: which size to generate at,
which inputs go together, and the seed. Every rule fails with an InputError that names the inputs.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from model.errors import InputError
from model.generation.speeds import SPEEDS
from model.inputs.sizes import ASPECT_RATIO_SIZES, Size, parse_resolution
from model.prompting.limits import Tokenizer, check_prompt, check_prompt_tokens
from model.prompting.styles import style_types

log = logging.getLogger(__name__)

SEED_MAX = 2147483647
# The contract bounds the seed above only (`le`); below, the bound is torch.Generator.manual_seed's, which
# takes a signed 64-bit integer (and unsigned ones above 2**63, which SEED_MAX already excludes).
SEED_MIN = -(2**63)
# The `resolution` value meaning "use aspect_ratio instead", as in the original model.
NO_RESOLUTION = "None"
MAGIC_PROMPT_OPTIONS = ("Auto", "On", "Off")


def option_choices() -> dict[str, tuple[str, ...]]:
    """The enum inputs and their values: the tables the service dispatches on (predict.py lists the same)."""
    return {
        "style_type": tuple(style_types()),
        "rendering_speed": tuple(SPEEDS),
        "magic_prompt_option": MAGIC_PROMPT_OPTIONS,
    }


def check_options(options: dict[str, str]) -> None:
    """InputError for an enum value no table holds. Cog's server checks these already; the demo, the
    evaluation and direct callers reach the service without it, and must fail here, before any model."""
    for name, choices in option_choices().items():
        if options[name] not in choices:
            raise InputError(f"{name} {options[name]!r} is not one of: {', '.join(choices)}")


@dataclass(frozen=True)
class InpaintInputs:
    image: Path
    mask: Path


@dataclass(frozen=True)
class Request:
    prompt: str
    reference_image: Path
    seed: int
    style_type: str
    rendering_speed: str
    magic_prompt_option: str
    # The output size for text-to-image; None when inpainting, whose output has the image's size.
    size: Size | None
    inpaint: InpaintInputs | None

    @property
    def mode(self) -> str:
        return "generate" if self.inpaint is None else "inpaint"


def resolve_seed(seed: int | None) -> int:
    """The request's seed: the given one, or a random one in [0, SEED_MAX]; logged either way."""
    if seed is None:
        seed = secrets.randbelow(SEED_MAX + 1)
    # A JSON number beyond 64 bits reaches the predictor as a float (coglet's parser), never as an int.
    elif isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX:
        raise InputError(
            f"seed must be a whole number from {SEED_MIN} to {SEED_MAX} (the random generator's range); "
            f"got {seed!r}: send a seed in that range, or none for a random one"
        )
    log.info("Using seed: %d", seed)
    return seed


def output_size(resolution: str, aspect_ratio: str) -> Size:
    """`resolution` overrides `aspect_ratio`; both come from the contract's lists."""
    if resolution != NO_RESOLUTION:
        return parse_resolution(resolution)
    try:
        return ASPECT_RATIO_SIZES[aspect_ratio]
    except KeyError:
        choices = ", ".join(ASPECT_RATIO_SIZES)
        raise InputError(f"aspect_ratio {aspect_ratio!r} is not one of: {choices}") from None


def check_downloaded(path: Path | None, input_name: str, downloads: Path) -> None:
    """A file input must be a file Cog downloaded (from an http(s) URL or a data URI) into `downloads`.

    Cog hands any other string on as a path, so without this rule a client could name a file of the
    server ("/etc/...", another image on its disk) and have it read, or learn whether it exists. Cog
    writes each download directly into its temporary folder (`tmpXXXXXXXX<name>`), so the file's folder
    must be that folder itself: anything below it (a checkout or a cache under /tmp) is not a download.
    """
    if path is None:
        return
    if Path(path).resolve().parent != downloads.resolve():
        raise InputError(
            f"{input_name} names no file sent with the request ({str(path)!r}): send an http(s) URL or a "
            "data URI of an image"
        )


def build_request(
    *,
    prompt: str,
    character_reference_image: Path,
    image: Path | None,
    mask: Path | None,
    seed: int | None,
    resolution: str,
    style_type: str,
    aspect_ratio: str,
    rendering_speed: str,
    magic_prompt_option: str,
    downloads: Path | None = None,
    prompt_tokenizer: Tokenizer | None = None,
) -> Request:
    """Validate the inputs together and normalise them into a Request.

    With `downloads` (the folder Cog downloads inputs into), every file input must lie inside it. With
    `prompt_tokenizer` (SDXL's), the prompt's text-encoder windows are bounded too
    (model/prompting/limits.py).
    """
    if downloads is not None:
        files = {"character_reference_image": character_reference_image, "image": image, "mask": mask}
        for name, path in files.items():
            check_downloaded(path, name, downloads)
    check_prompt(prompt)
    if prompt_tokenizer is not None:
        check_prompt_tokens(prompt, prompt_tokenizer)
    check_options(
        dict(style_type=style_type, rendering_speed=rendering_speed, magic_prompt_option=magic_prompt_option)
    )
    if mask is not None and image is None:
        raise InputError("mask was given without image: inpainting needs both image and mask")
    if image is not None and mask is None:
        raise InputError(
            "image was given without mask: inpainting needs a mask too "
            "(black pixels are regenerated, white pixels are kept)"
        )
    inpaint = InpaintInputs(image=Path(image), mask=Path(mask)) if image is not None else None
    size = None if inpaint is not None else output_size(resolution, aspect_ratio)
    if inpaint is not None and (resolution != NO_RESOLUTION or aspect_ratio != "1:1"):
        log.info("Inpainting: resolution and aspect_ratio are ignored; the output has the image's size")
    return Request(
        prompt=prompt.strip(),
        reference_image=Path(character_reference_image),
        seed=resolve_seed(seed),
        style_type=style_type,
        rendering_speed=rendering_speed,
        magic_prompt_option=magic_prompt_option,
        size=size,
        inpaint=inpaint,
    )
