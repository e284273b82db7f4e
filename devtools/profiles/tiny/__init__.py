"""The tiny profile: random-weight miniatures of every production component, written offline.

The folder has the production layout (model/weights/layout.py) and its own manifest.json, so the server loads
it exactly as it loads production weights. Images made with it are noise; it exists so that every code
path runs on a CPU in seconds. `build_tiny_profile` writes it; the modules beside it write each component.
"""

from __future__ import annotations

from pathlib import Path

from devtools.profiles.tiny.evaluation import write_evaluation_clip
from devtools.profiles.tiny.faces import write_face_models
from devtools.profiles.tiny.pulid import write_pulid
from devtools.profiles.tiny.safety import write_safety_checker
from devtools.profiles.tiny.sdxl import write_sdxl_components
from devtools.profiles.tiny.turbo import write_turbo_lora
from model.weights.layout import WeightsLayout
from model.weights.manifest import Manifest, write_manifest


def build_tiny_profile(root: Path) -> Manifest:
    layout = WeightsLayout(Path(root).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    paths = write_sdxl_components(layout.root)
    paths += write_face_models(layout.face_analysis)
    paths += write_turbo_lora(layout.root)
    paths += write_pulid(layout.root)
    paths += write_safety_checker(layout.root)
    evaluation = write_evaluation_clip(layout.root)
    return write_manifest(layout.root, profile="tiny", paths=paths + evaluation, evaluation_paths=evaluation)
