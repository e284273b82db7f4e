"""Identity fidelity and prompt adherence: face similarity, faceless share, CLIP-T and seconds per image.

Usage:
  python scripts/evaluate.py --weights-dir weights                    # production: the full set, on a GPU
  python scripts/evaluate.py --weights-dir .cache/tiny-weights --max-references 2 --max-prompts 2 \\
      --speeds Turbo --styles Realistic --magic-prompt Off           # the CI run (scores meaningless)

Generates one image per (reference, prompt, speed, style) through CharacterService, exactly as the server
does, and scores each: the cosine of the face embeddings of the reference and the output (ArcFace, the
pipeline's own, by default; --embedder dlib for dlib's network), whether the output has a face at all, and
CLIP-T (the CLIP model listed as evaluation-only in the weights manifest; production needs
`scripts/download_weights.py --with-evaluation`). Writes OUT/evaluation.json, OUT/contact_sheet.png
(references in rows, outputs in columns, scores under each) and OUT/images/, and prints the table per speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from devtools.evaluation import (
    EMBEDDERS,
    TILE,
    ClipTextScorer,
    Sample,
    contact_sheet,
    face_similarity,
    summarize,
    summary_table,
)
from model.errors import InputError, WeightsError
from model.generation.speeds import SPEEDS
from model.identity.reference import REFERENCE_PIXELS
from model.inputs.images import load_image
from model.inputs.request import build_request
from model.inputs.sizes import ASPECT_RATIO_SIZES
from model.options import weights_dir_from_environment
from model.prompting.styles import styles
from model.weights.checks import check_evaluation_weights
from model.weights.layout import WeightsLayout
from model.weights.manifest import TINY

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "evaluation" / "references"
PROMPTS = ROOT / "evaluation" / "prompts.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
MAGIC_PROMPT_OPTIONS = ("Auto", "On", "Off")
TINY_WARNING = (
    "WARNING: tiny profile (random weights): every score below is meaningless. This run only proves that "
    "the evaluation's code path works; run it with production weights on a GPU for real numbers."
)


class EvaluationError(RuntimeError):
    """An evaluation input (references, prompts, weights) that cannot be used, and what to do about it."""


def reference_files(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvaluationError(f"No reference photos ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files[:limit]


def read_prompts(path: Path, limit: int | None) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise EvaluationError(f"No prompts in {path}: write one prompt a line (# starts a comment)")
    return prompts[:limit]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=weights_dir_from_environment(),
        help="production or tiny weights folder (default: $WEIGHTS_DIR, else weights/)",
    )
    parser.add_argument("--references", type=Path, default=REFERENCES, help="folder of reference photos")
    parser.add_argument("--prompts", type=Path, default=PROMPTS, help="text file, one prompt a line")
    parser.add_argument("--max-references", type=int, help="use only the first N references (sorted by name)")
    parser.add_argument("--max-prompts", type=int, help="use only the first N prompts")
    parser.add_argument("--speeds", nargs="+", choices=list(SPEEDS), default=list(SPEEDS))
    parser.add_argument("--styles", nargs="+", choices=list(styles()), default=list(styles()))
    parser.add_argument(
        "--magic-prompt",
        choices=MAGIC_PROMPT_OPTIONS,
        default="Auto",
        help="magic_prompt_option of every request (default Auto, the server's default)",
    )
    parser.add_argument("--aspect-ratio", choices=list(ASPECT_RATIO_SIZES), default="1:1")
    parser.add_argument("--seed", type=int, default=0, help="prompt i is generated with seed SEED + i")
    parser.add_argument("--embedder", choices=list(EMBEDDERS), default="arcface", help="face embedding")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "evaluation")
    parser.add_argument("--tile", type=int, default=TILE, help="contact sheet tile side in pixels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    layout = WeightsLayout(args.weights_dir)
    # Before the minutes of loading: the CLIP-T model is not part of what setup() checks.
    manifest = check_evaluation_weights(layout)
    references = reference_files(args.references, args.max_references)
    prompts = read_prompts(args.prompts, args.max_prompts)
    tiny = manifest.profile == TINY
    if tiny:
        print(TINY_WARNING, flush=True)

    from model.service import CharacterService, serving_device

    service = CharacterService.load(layout.root)
    embedder = EMBEDDERS[args.embedder].build(service.faces)
    clip = ClipTextScorer.load(layout, serving_device()[0])

    # Every reference must pass the pipeline's own face check before minutes of generation are spent.
    loaded = []
    for reference_path in references:
        # Read as the service reads a reference (model/service.py).
        reference = load_image(reference_path, str(reference_path), reduce_to_pixels=REFERENCE_PIXELS)
        service.faces.analyze(reference, input_name=str(reference_path))
        reference_embedding = embedder.embed(reference)
        if reference_embedding is None:
            raise EvaluationError(
                f"The {embedder.name} face embedder finds no face in {reference_path}: use a clear, "
                "front-facing photo of one person, or another --embedder"
            )
        loaded.append((reference_path, reference, reference_embedding))

    images_dir = args.out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    total = len(references) * len(prompts) * len(args.speeds) * len(args.styles)
    samples: list[Sample] = []
    rows: list[list[tuple[Sample, Image.Image]]] = []
    shown: list[tuple[str, Image.Image]] = []
    for reference_path, reference, reference_embedding in loaded:
        shown.append((reference_path.stem, reference))
        row = []
        for prompt_index, prompt in enumerate(prompts):
            for speed in args.speeds:
                for style in args.styles:
                    request = build_request(
                        prompt=prompt,
                        character_reference_image=reference_path,
                        image=None,
                        mask=None,
                        seed=args.seed + prompt_index,
                        resolution="None",
                        style_type=style,
                        aspect_ratio=args.aspect_ratio,
                        rendering_speed=speed,
                        magic_prompt_option=args.magic_prompt,
                    )
                    started = time.perf_counter()
                    generated = service.generate(request)
                    seconds = time.perf_counter() - started
                    name = f"{reference_path.stem}__p{prompt_index}__{speed}__{style}.png"
                    shutil.move(generated, images_dir / name)
                    shutil.rmtree(generated.parent, ignore_errors=True)
                    image = Image.open(images_dir / name).convert("RGB")
                    sample = Sample(
                        reference=reference_path.name,
                        prompt_index=prompt_index,
                        prompt=prompt,
                        speed=speed,
                        style=style,
                        seed=request.seed,
                        image=f"images/{name}",
                        face_similarity=face_similarity(embedder, reference_embedding, image),
                        # Adherence to what the user asked: the prompt before magic prompt and style.
                        clip_t=clip.score(image, prompt),
                        seconds=seconds,
                    )
                    samples.append(sample)
                    row.append((sample, image))
                    caption = "  ".join(sample.caption)
                    print(
                        f"[{len(samples)}/{total}] {reference_path.stem} p{prompt_index}: {caption}",
                        flush=True,
                    )
        rows.append(row)

    summary = summarize(samples)
    table = summary_table(summary)
    result = {
        "profile": manifest.profile,
        "warning": TINY_WARNING if tiny else None,
        "weights_dir": str(layout.root),
        "face_embedder": args.embedder,
        "clip_model": str(layout.evaluation_clip),
        "settings": {
            "references": [p.name for p in references],
            "prompts": prompts,
            "speeds": args.speeds,
            "styles": args.styles,
            "magic_prompt_option": args.magic_prompt,
            "aspect_ratio": args.aspect_ratio,
            "seed": args.seed,
        },
        "summary": [row.as_dict() for row in summary],
        "samples": [asdict(sample) for sample in samples],
    }
    json_path = args.out / "evaluation.json"
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    sheet_path = args.out / "contact_sheet.png"
    contact_sheet(shown, rows, args.tile).save(sheet_path)

    print()
    print(
        f"Identity fidelity ({args.embedder} face similarity: cosine of reference and output embeddings) "
        f"and prompt adherence (CLIP-T), {manifest.profile} weights, {len(references)} references x "
        f"{len(prompts)} prompts x {len(args.styles)} styles per speed"
    )
    print()
    print("\n".join(table))
    print()
    if tiny:
        print(TINY_WARNING)
    print(f"Wrote {json_path}, {sheet_path} and {len(samples)} images in {images_dir}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (EvaluationError, InputError, WeightsError) as error:
        sys.exit(f"evaluate.py: {error}")
