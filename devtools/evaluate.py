"""Identity fidelity and prompt adherence of each identity adapter: face similarity, faceless share, CLIP-T.

Usage:
  python scripts/evaluate.py --weights-dir weights                    # production: the full set, on a GPU
  python scripts/evaluate.py --weights-dir .cache/tiny-weights --max-references 2 --max-prompts 2 \\
      --speeds Turbo --styles Realistic --magic-prompt Off           # the CI run (scores meaningless)

Runs each identity adapter (--adapters, default pulid,faceid: one CharacterService per adapter, in turn, the
first freed before the next loads) on the same references, prompts, seeds, speeds and styles, generating
one image per (adapter, reference, prompt, speed, style) exactly as the server does, and scores each: the
cosine of the face embeddings of the reference and the output, by insightface buffalo_l's ArcFace
(w600k_r50, the server's own identity score; PuLID conditions on antelopev2's glintr100, a different
network) by default, or --embedder dlib for dlib's network; whether the output has a face at all; and
CLIP-T (the CLIP model listed as evaluation-only in the weights manifest; production needs
`scripts/download_weights.py --with-evaluation`). Writes OUT/evaluation.json, OUT/evaluation.md (the report
and its table), OUT/contact_sheet.png (references in rows, outputs in columns, the adapters side by side,
scores under each) and OUT/images/ADAPTER/, and prints the table per (adapter, speed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from devtools.evaluation import (
    EMBEDDERS,
    TILE,
    ClipTextScorer,
    FaceEmbedder,
    Sample,
    contact_sheet,
    face_similarity,
    summarize,
    summary_table,
)
from model.errors import ConfigurationError, InputError, WeightsError
from model.generation.speeds import SPEEDS
from model.identity.faces import FaceAnalyzer
from model.identity.reference import REFERENCE_PIXELS
from model.inputs.images import load_image
from model.inputs.request import build_request
from model.inputs.sizes import ASPECT_RATIO_SIZES
from model.memory import release_freed_memory
from model.options import (
    FACEID,
    IDENTITY_ADAPTER_ENV,
    IDENTITY_ADAPTERS,
    PULID,
    ServiceOptions,
    weights_dir_from_environment,
)
from model.prompting.styles import styles
from model.weights.checks import check_evaluation_weights
from model.weights.layout import WeightsLayout
from model.weights.manifest import TINY

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "evaluation" / "references"
PROMPTS = ROOT / "evaluation" / "prompts.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
MAGIC_PROMPT_OPTIONS = ("Auto", "On", "Off")
# The identity adapters as the report names them (model/options.py has their option values).
ADAPTER_NAMES = {PULID: "PuLID v1.1", FACEID: "IP-Adapter FaceID Plus v2"}
TINY_WARNING = (
    "WARNING: tiny profile (random weights): every score below is meaningless. This run only proves that "
    "the evaluation's code path works; run it with production weights on a GPU for real numbers."
)


class EvaluationError(RuntimeError):
    """An evaluation input (references, prompts, weights) that cannot be used, and what to do about it."""


@dataclass
class Progress:
    """The `[done/total]` counter of the log lines, over every adapter."""

    total: int
    done: int = 0

    def step(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {text}", flush=True)


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference photo as the service reads it, and its face embedding by the evaluation's recogniser."""

    path: Path
    image: Image.Image
    embedding: np.ndarray


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


def adapter_list(value: str) -> list[str]:
    """--adapters: comma-separated identity adapters, each once, in the order given (the order they run)."""
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in IDENTITY_ADAPTERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(value)} is not an identity adapter: give one or more of "
            f"{', '.join(IDENTITY_ADAPTERS)}, separated by commas (default {','.join(IDENTITY_ADAPTERS)})"
        )
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=weights_dir_from_environment(),
        help="production or tiny weights folder (default: $WEIGHTS_DIR, else weights/)",
    )
    parser.add_argument(
        "--adapters",
        type=adapter_list,
        default=list(IDENTITY_ADAPTERS),
        help="identity adapters to compare, comma-separated, run in turn "
        f"(default {','.join(IDENTITY_ADAPTERS)})",
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
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    layout = WeightsLayout(args.weights_dir)
    # Before the minutes of loading: the CLIP-T model is not part of what setup() checks, and the server's
    # other switches (CHARACTER_*) are read as the server reads them, the identity adapter set per run.
    manifest = check_evaluation_weights(layout)
    options = {
        adapter: ServiceOptions.from_environment({**os.environ, IDENTITY_ADAPTER_ENV: adapter})
        for adapter in args.adapters
    }
    reference_paths = reference_files(args.references, args.max_references)
    prompts = read_prompts(args.prompts, args.max_prompts)
    tiny = manifest.profile == TINY
    if tiny:
        print(TINY_WARNING, flush=True)

    from model.service import serving_device

    # The recogniser is loaded once, apart from every service: each adapter is scored by the same network,
    # whichever face models the adapter itself loads.
    embedder = EMBEDDERS[args.embedder].build(FaceAnalyzer(layout.face_analysis))
    references = load_references(reference_paths, embedder, FaceAnalyzer(layout.face_analysis))
    clip = ClipTextScorer.load(layout, serving_device()[0])

    images_dir = args.out / "images"
    per_adapter = len(references) * len(prompts) * len(args.speeds) * len(args.styles)
    progress = Progress(len(args.adapters) * per_adapter)
    generated: list[tuple[Sample, Image.Image]] = []
    for adapter in args.adapters:
        generated += run_adapter(
            adapter, options[adapter], layout, args, references, prompts, embedder, clip, images_dir, progress
        )
        # The service is unreachable now: free it before the next adapter's weights load.
        release_freed_memory()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    samples = [sample for sample, _ in generated]
    result = report(args, argv, manifest.profile, layout, reference_paths, prompts, samples)
    sheet_path = args.out / "contact_sheet.png"
    contact_sheet(
        [(reference.path.stem, reference.image) for reference in references],
        sheet_rows(references, generated, args),
        args.tile,
    ).save(sheet_path)
    print(
        f"Wrote {args.out / 'evaluation.json'}, {args.out / 'evaluation.md'}, {sheet_path} and "
        f"{len(samples)} images in {images_dir}"
    )
    return result


def load_references(paths: Sequence[Path], embedder: FaceEmbedder, faces: FaceAnalyzer) -> list[Reference]:
    """Every reference must pass the pipeline's face check before minutes of generation are spent."""
    references = []
    for path in paths:
        # Read as the service reads a reference (model/service.py).
        image = load_image(path, str(path), reduce_to_pixels=REFERENCE_PIXELS)
        faces.analyze(image, input_name=str(path))
        embedding = embedder.embed(image)
        if embedding is None:
            raise EvaluationError(
                f"The {embedder.name} face embedder finds no face in {path}: use a clear, "
                "front-facing photo of one person, or another --embedder"
            )
        references.append(Reference(path, image, embedding))
    return references


def run_adapter(
    adapter: str,
    options: ServiceOptions,
    layout: WeightsLayout,
    args: argparse.Namespace,
    references: Sequence[Reference],
    prompts: Sequence[str],
    embedder: FaceEmbedder,
    clip: ClipTextScorer,
    images_dir: Path,
    progress: Progress,
) -> list[tuple[Sample, Image.Image]]:
    """Load one CharacterService with this identity adapter and generate every image with it; the service
    is dropped on return. Returns each sample with a preview of its image (a contact sheet tile)."""
    from model.service import CharacterService

    print(f"Identity adapter {adapter}: loading {ADAPTER_NAMES[adapter]}", flush=True)
    service = CharacterService.load(layout.root, options=options)
    for reference in references:
        # The adapter's own face check too (it may load other face models than the recogniser's).
        service.faces.analyze(reference.image, input_name=str(reference.path))
    folder = images_dir / adapter
    folder.mkdir(parents=True, exist_ok=True)
    generated = []
    runs = itertools.product(references, enumerate(prompts), args.speeds, args.styles)
    for reference, (prompt_index, prompt), speed, style in runs:
        request = build_request(
            prompt=prompt,
            character_reference_image=reference.path,
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
        output = service.generate(request)
        seconds = time.perf_counter() - started
        name = f"{reference.path.stem}__p{prompt_index}__{speed}__{style}.png"
        shutil.move(output, folder / name)
        shutil.rmtree(output.parent, ignore_errors=True)
        image = Image.open(folder / name).convert("RGB")
        sample = Sample(
            adapter=adapter,
            reference=reference.path.name,
            prompt_index=prompt_index,
            prompt=prompt,
            speed=speed,
            style=style,
            seed=request.seed,
            image=f"images/{adapter}/{name}",
            face_similarity=face_similarity(embedder, reference.embedding, image),
            # Adherence to what the user asked: the prompt before magic prompt and style.
            clip_t=clip.score(image, prompt),
            seconds=seconds,
        )
        image.thumbnail((args.tile, args.tile))
        generated.append((sample, image))
        progress.step(f"{reference.path.stem}: {'  '.join(sample.caption)}")
    return generated


def sheet_rows(
    references: Sequence[Reference], generated: Sequence[tuple[Sample, Image.Image]], args: argparse.Namespace
) -> list[list[tuple[Sample, Image.Image]]]:
    """One row per reference; in it, each (prompt, speed, style) with the adapters side by side."""
    order = {adapter: index for index, adapter in enumerate(args.adapters)}
    speeds = {speed: index for index, speed in enumerate(args.speeds)}
    style_order = {style: index for index, style in enumerate(args.styles)}

    def key(cell: tuple[Sample, Image.Image]) -> tuple[int, int, int, int]:
        sample = cell[0]
        return sample.prompt_index, speeds[sample.speed], style_order[sample.style], order[sample.adapter]

    return [
        sorted((cell for cell in generated if cell[0].reference == reference.path.name), key=key)
        for reference in references
    ]


def report(
    args: argparse.Namespace,
    argv: Sequence[str],
    profile: str,
    layout: WeightsLayout,
    reference_paths: Sequence[Path],
    prompts: Sequence[str],
    samples: Sequence[Sample],
) -> dict:
    """Print the report, write it as OUT/evaluation.md and OUT/evaluation.json; returns the JSON's content."""
    tiny = profile == TINY
    summary = summarize(samples)
    recogniser = EMBEDDERS[args.embedder].description
    adapters = ", ".join(f"{adapter} ({ADAPTER_NAMES[adapter]})" for adapter in args.adapters)
    text = [
        f"Identity fidelity and prompt adherence per identity adapter and rendering speed, {profile} "
        f"weights: {len(reference_paths)} references x {len(prompts)} prompts x {len(args.styles)} styles "
        f"per row; adapters {adapters}.",
        "Identity: face similarity, the cosine of the face embeddings of the reference and the output "
        f"(largest face each), by the {args.embedder} recogniser: {recogniser}.",
        "Prompt adherence: CLIP-T, the cosine of the CLIP embeddings of the output and of the prompt as "
        f"written, by the evaluation CLIP model ({layout.evaluation_clip}).",
    ]
    table = summary_table(summary)
    command = shlex.join(["python", "scripts/evaluate.py", *argv])
    markdown = ["# Identity evaluation", *([f"**{TINY_WARNING}**"] if tiny else []), *text, "\n".join(table)]
    markdown.append(f"Command: `{command}`")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.md").write_text("\n\n".join(markdown) + "\n", encoding="utf-8")
    result = {
        "profile": profile,
        "warning": TINY_WARNING if tiny else None,
        "weights_dir": str(layout.root),
        "command": command,
        "adapters": list(args.adapters),
        "face_embedder": args.embedder,
        "recogniser": recogniser,
        "clip_model": str(layout.evaluation_clip),
        "settings": {
            "references": [p.name for p in reference_paths],
            "prompts": list(prompts),
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
    print()
    print("\n".join(text))
    print()
    print("\n".join(table))
    print()
    if tiny:
        print(TINY_WARNING)
    return result


if __name__ == "__main__":
    try:
        main()
    except (EvaluationError, ConfigurationError, InputError, WeightsError) as error:
        sys.exit(f"evaluate.py: {error}")
