"""One prediction on the offline default: production weights when the weights folder has them,
otherwise the tiny profile (built on first use). Writes the image and prints the server's log lines.

On the tiny profile it renders at rendering_speed Turbo (8 steps without guidance, against Default's 28
with guidance: the image is noise either way, and every stage still runs), so that it ends in about a
minute on a 2-core CPU; with production weights, at Default.

Usage: python scripts/demo.py [--weights-dir weights] [--tiny-weights-dir .cache/tiny-weights]
                              [--out outputs/demo.png] [--rendering-speed Default|Turbo|Quality]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from devtools.profiles.tiny import build_tiny_profile
from model.errors import WeightsError
from model.logs import configure_logging
from model.options import weights_dir_from_environment
from model.weights.checks import check_weights
from model.weights.layout import WeightsLayout
from model.weights.manifest import load_manifest

PROMPT = "a close up photo of a woman in a fashion magazine photoshoot"


def has_production_weights(folder: Path) -> bool:
    manifest = WeightsLayout(folder).manifest
    return manifest.is_file() and load_manifest(manifest).profile == "production"


def tiny_profile(folder: Path) -> Path:
    try:
        check_weights(WeightsLayout(folder))
    except WeightsError:
        print(f"Building the tiny profile in {folder} ...")
        shutil.rmtree(folder, ignore_errors=True)
        build_tiny_profile(folder)
    return folder


def reference_photo() -> Path:
    """NASA's public-domain astronaut portrait, shipped with scikit-image: no download needed."""
    from PIL import Image
    from skimage import data

    # Where Cog puts a downloaded input: directly in the temporary folder, the only place the predictor
    # reads file inputs from (model/inputs/request.py).
    with tempfile.NamedTemporaryFile(prefix="demo-", suffix="astronaut.png", delete=False) as file:
        Image.fromarray(data.astronaut()).save(file, format="PNG")
    return Path(file.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=weights_dir_from_environment())
    parser.add_argument("--tiny-weights-dir", type=Path, default=Path(".cache/tiny-weights"))
    parser.add_argument("--out", type=Path, default=Path("outputs/demo.png"))
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--seed", type=int, default=144578042)
    parser.add_argument(
        "--rendering-speed",
        choices=("Default", "Turbo", "Quality"),
        help="default: Default with production weights, Turbo on the tiny profile",
    )
    args = parser.parse_args()
    # Before the tiny profile is built: diffusers' and transformers' save-time notices and progress bars
    # ("Writing model shards", "kept in float32: []") say nothing to the user.
    configure_logging()

    if has_production_weights(args.weights_dir):
        weights = args.weights_dir
        speed = args.rendering_speed or "Default"
        print(f"Using production weights from {weights}")
    else:
        print(
            f"No production weights in {args.weights_dir}: using the tiny offline profile "
            "(random weights, so the image is noise; run scripts/download_weights.py for real images)."
        )
        weights = tiny_profile(args.tiny_weights_dir)
        speed = args.rendering_speed or "Turbo"
    print(f"Rendering speed: {speed}")
    os.environ["WEIGHTS_DIR"] = str(weights)

    from predict import Predictor

    predictor = Predictor()
    predictor.setup()
    output = predictor.run(
        prompt=args.prompt,
        character_reference_image=reference_photo(),
        image=None,
        mask=None,
        seed=args.seed,
        resolution="None",
        style_type="Auto",
        aspect_ratio="1:1",
        rendering_speed=speed,
        magic_prompt_option="Auto",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(output, args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
