"""What the tests share, in one place: test modules import from here (and conftest.py's fixtures), never from
one another.

- `images`: PNG bytes, data URIs and pixels; image files as phones and clients send them (HEIC, camera JPEGs,
  headers declaring huge sizes, alpha, palettes, 16-bit, animation, EXIF rotation) and a face-less cartoon.
- `colour_profiles`: real non-sRGB ICC profiles (Display P3, grey), built byte by byte.
- `cog_server`: the real coglet server on a folder of weights, and a plain file server for URL inputs.
- `contract`: the original model's contract and a comparison of an OpenAPI document against it.
- `tiny`: the tiny SDXL components of the generation tests, and random identities for them.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository: the Cog server, the scripts and the docs the tests read are found from here.
ROOT = Path(__file__).resolve().parents[2]

# Torch threads per process: the 2-core machines the suite runs on have two cores in all. `make test` runs two
# pytest-xdist workers, each with its own Cog servers, so every process gets one thread; more is slower.
# conftest.py sets this process's torch to it; the servers and scripts the tests start get it too.
TORCH_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else os.environ.get("OMP_NUM_THREADS", "2")
