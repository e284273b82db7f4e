"""Write the tiny profile (devtools/profiles/tiny) into a folder, offline.

Usage: python scripts/make_tiny_weights.py [--if-missing] DIR
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from model.errors import WeightsError
from model.logs import configure_logging
from model.weights.checks import check_weights
from model.weights.layout import WeightsLayout


def complete(folder: Path) -> bool:
    """Whether `folder` already holds a whole profile that passes the server's own weights checks."""
    try:
        check_weights(WeightsLayout(folder))
    except WeightsError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="folder to write the tiny profile into")
    parser.add_argument(
        "--if-missing", action="store_true", help="keep the folder when it already passes the weights checks"
    )
    args = parser.parse_args()
    if args.if_missing and complete(args.dir):
        print(f"the tiny profile in {args.dir} is complete; kept")
        return
    # Only to build: diffusers and transformers load in seconds, which the check above does not need; their
    # save-time notices and progress bars ("Writing model shards", "kept in float32: []") say nothing to
    # the user.
    configure_logging()
    from devtools.profiles.tiny import build_tiny_profile

    started = time.perf_counter()
    manifest = build_tiny_profile(args.dir)
    elapsed = time.perf_counter() - started
    print(f"wrote the tiny profile ({len(manifest.files)} files) to {args.dir} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
