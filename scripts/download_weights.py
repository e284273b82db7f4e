"""Download the production weights into a weights folder, or check one (re-runnable).

Usage: python scripts/download_weights.py [--weights-dir DIR] [--check-only] [--with-evaluation]

DIR defaults to $WEIGHTS_DIR, else weights/. Files already present and verified are skipped; the others are
fetched at their pinned revision, verified (size, sha256) and moved into place; partial downloads are
removed. Exit status 0 when every file is in place, 1 otherwise, 130 when interrupted. A gated repository
needs HF_TOKEN in the environment. The logic lives in model/weights/download.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from model.options import weights_dir_from_environment
from model.weights import download

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=weights_dir_from_environment(),
        help="the weights folder (default: $WEIGHTS_DIR, else weights/)",
    )
    parser.add_argument(
        "--check-only", action="store_true", help="verify the folder and report; download nothing"
    )
    parser.add_argument(
        "--with-evaluation",
        action="store_true",
        help="also fetch the evaluation-only files (CLIP-T model of scripts/evaluate.py); serving needs none",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return download.run(
            args.weights_dir,
            check_only=args.check_only,
            with_evaluation=args.with_evaluation,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except KeyboardInterrupt:
        print(
            "Interrupted: the partial download was removed; re-run the same command to continue.", flush=True
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
