"""Write the tiny profile: random-weight miniatures of every production component, offline.

Usage: python scripts/make_tiny_weights.py DIR

The folder has the production layout (model/layout.py) and its own manifest.json, so the server loads
it exactly as it loads production weights. Images made with it are noise; it exists so that every code
path runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.layout import WeightsLayout  # noqa: E402
from model.tiny_profile.evaluation import write_evaluation_clip  # noqa: E402
from model.tiny_profile.faces import write_face_models  # noqa: E402
from model.tiny_profile.safety import write_safety_checker  # noqa: E402
from model.tiny_profile.sdxl import write_sdxl_components  # noqa: E402
from model.tiny_profile.turbo import write_turbo_lora  # noqa: E402
from model.weights import Manifest, write_manifest  # noqa: E402


def build_tiny_profile(root: Path) -> Manifest:
    layout = WeightsLayout(Path(root).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    paths = write_sdxl_components(layout.root)
    paths += write_face_models(layout.face_analysis)
    paths += write_turbo_lora(layout.root)
    paths += write_safety_checker(layout.root)
    evaluation = write_evaluation_clip(layout.root)
    return write_manifest(layout.root, profile="tiny", paths=paths + evaluation, evaluation_paths=evaluation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="folder to write the tiny profile into")
    args = parser.parse_args()
    started = time.perf_counter()
    manifest = build_tiny_profile(args.dir)
    elapsed = time.perf_counter() - started
    print(f"wrote the tiny profile ({len(manifest.files)} files) to {args.dir} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
