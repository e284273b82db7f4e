"""Write the tiny profile (devtools/profiles/tiny) into a folder, offline.

Usage: python scripts/make_tiny_weights.py DIR
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from devtools.profiles.tiny import build_tiny_profile


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
