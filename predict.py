"""Cog entry point: the inputs of Ideogram Character, exactly, and a call into the `model` package.

Current Cog reads the input schema statically from this file, so every choice list is a literal here;
tests/test_contract.py proves that these lists equal the contract and the package's own tables.
"""

import tempfile
from typing import Optional

from cog import BaseRunner, Input, Path

from model.errors import reported_failures
from model.inputs.request import build_request
from model.logs import configure_logging
from model.memory import freeze_long_lived_objects
from model.options import ServiceOptions
from model.prompting.limits import load_prompt_tokenizer
from model.service import CharacterService
from model.weights.url import fetch_weights_if_configured

RESOLUTIONS = [
    "None",
    "512x1536", "576x1408", "576x1472", "576x1536", "640x1344", "640x1408", "640x1472", "640x1536",
    "704x1152", "704x1216", "704x1280", "704x1344", "704x1408", "704x1472", "736x1312", "768x1088",
    "768x1216", "768x1280", "768x1344", "800x1280", "832x960", "832x1024", "832x1088", "832x1152",
    "832x1216", "832x1248", "864x1152", "896x960", "896x1024", "896x1088", "896x1120", "896x1152",
    "960x832", "960x896", "960x1024", "960x1088", "1024x832", "1024x896", "1024x960", "1024x1024",
    "1088x768", "1088x832", "1088x896", "1088x960", "1120x896", "1152x704", "1152x832", "1152x864",
    "1152x896", "1216x704", "1216x768", "1216x832", "1248x832", "1280x704", "1280x768", "1280x800",
    "1312x736", "1344x640", "1344x704", "1344x768", "1408x576", "1408x640", "1408x704", "1472x576",
    "1472x640", "1472x704", "1536x512", "1536x576", "1536x640",
]  # fmt: skip
ASPECT_RATIOS = [
    "1:3", "3:1", "1:2", "2:1", "9:16", "16:9", "10:16", "16:10",
    "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "1:1",
]  # fmt: skip
STYLE_TYPES = ["Auto", "Fiction", "Realistic"]
RENDERING_SPEEDS = ["Default", "Turbo", "Quality"]
MAGIC_PROMPT_OPTIONS = ["Auto", "On", "Off"]
SEED_MAX = 2147483647


class Predictor(BaseRunner):
    def setup(self) -> None:
        configure_logging()
        # Every environment variable, read and checked once, before anything is fetched or loaded.
        options = ServiceOptions.from_environment()
        # Only with WEIGHTS_URL set, and only when the folder is missing or incomplete (model/weights/url.py).
        fetch_weights_if_configured(options.weights_dir, options.weights_url, options.weights_sha256)
        self.service = CharacterService.load(options.weights_dir, options)
        # Counts the prompt's text-encoder windows before any model runs (model/prompting/limits.py).
        self.prompt_tokenizer = load_prompt_tokenizer(self.service.layout.sdxl)
        # Last: everything setup built lives as long as the server; no request's collection scans it again.
        freeze_long_lived_objects()

    def run(
        self,
        prompt: str = Input(description="What to generate: the scene, the action, the look."),
        character_reference_image: Path = Input(
            description="One image of the character whose identity (face) the output keeps."
        ),
        image: Optional[Path] = Input(
            description="An image to paint the character into. Needs a mask. "
            "The output has this image's size.",
            default=None,
        ),
        mask: Optional[Path] = Input(
            description="Black and white mask for `image`: black pixels are regenerated, white pixels "
            "are kept exactly. Or OpenAI's shape: an opaque image with the area to regenerate transparent. "
            "Any size with the image's aspect ratio (scaled to it).",
            default=None,
        ),
        seed: Optional[int] = Input(
            description="Random seed: the same inputs and seed give the same image. Random when empty.",
            le=SEED_MAX,
            default=None,
        ),
        resolution: str = Input(
            description="Output size. Overrides aspect_ratio. Ignored when inpainting.",
            choices=RESOLUTIONS,
            default="None",
        ),
        style_type: str = Input(
            description="Look of the character: Fiction (illustrated, animated, painted), Realistic "
            "(photographic), or Auto to decide from the prompt.",
            choices=STYLE_TYPES,
            default="Auto",
        ),
        aspect_ratio: str = Input(
            description="Aspect ratio of the output at about one megapixel. Ignored when a resolution "
            "is given or when inpainting.",
            choices=ASPECT_RATIOS,
            default="1:1",
        ),
        rendering_speed: str = Input(
            description="Turbo: fewest steps, fastest. Default: balanced. Quality: most steps, best.",
            choices=RENDERING_SPEEDS,
            default="Default",
        ),
        magic_prompt_option: str = Input(
            description="Magic Prompt rewrites the prompt with richer detail and translates other "
            "languages. Auto rewrites short or non-English prompts.",
            choices=MAGIC_PROMPT_OPTIONS,
            default="Auto",
        ),
    ) -> Path:
        # A refused input passes through as it is; any other failure becomes one sentence for the client,
        # with the traceback in the log for the operator (model/errors.py).
        with reported_failures():
            request = build_request(
                prompt=prompt,
                character_reference_image=character_reference_image,
                image=image,
                mask=mask,
                seed=seed,
                resolution=resolution,
                style_type=style_type,
                aspect_ratio=aspect_ratio,
                rendering_speed=rendering_speed,
                magic_prompt_option=magic_prompt_option,
                # Cog downloads URL and data-URI inputs into the temporary folder; no other file is read.
                downloads=Path(tempfile.gettempdir()),
                prompt_tokenizer=self.prompt_tokenizer,
            )
            return Path(self.service.generate(request, record_metric=self.record_metric))
