"""The packages the serving code imports, and which of them this machine lacks.

Light on purpose (standard library only): scripts/benchmark.py calls it before any model import, so a
machine without e.g. diffusers hears which wheels to carry, not an ImportError from deep inside the package.
"""

from __future__ import annotations

import importlib.util

# Import name -> the pip package that provides it: what the serving code imports (requirements.txt).
REQUIRED_PACKAGES = {
    "torch": "torch",
    "diffusers": "diffusers==0.42.1",
    "peft": "peft==0.21.2",
    "transformers": "transformers==5.23.0",
    "accelerate": "accelerate==1.15.0",
    "safetensors": "safetensors==0.8.0",
    "tokenizers": "tokenizers==0.23.3",
    "huggingface_hub": "huggingface_hub==2.4.0",
    "insightface": "insightface==2.1",
    "onnx": "onnx==1.23.2",
    "onnxruntime": "onnxruntime==1.31.1 (or onnxruntime-gpu==1.31.1)",
    "cv2": "opencv-python==5.0.0.93 (or opencv-python-headless)",
    "skimage": "scikit-image==0.26.0",
    "scipy": "scipy==1.17.1",
    "PIL": "pillow==13.0.0",
    "numpy": "numpy",
}


def missing_packages() -> list[str]:
    """The pip packages of REQUIRED_PACKAGES whose module cannot be found here."""
    return [
        package for module, package in REQUIRED_PACKAGES.items() if importlib.util.find_spec(module) is None
    ]
