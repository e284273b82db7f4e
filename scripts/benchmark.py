"""Performance table: cost per speed, memory budget and the serving code measured (devtools/benchmark/).

Usage:
  python scripts/benchmark.py --profile tiny [--weights-dir DIR] [--runs 5] [--quick] [--json PATH]
  python scripts/benchmark.py --profile production [--weights-dir weights]   # on a CUDA GPU
  python scripts/benchmark.py --profile random [--runs 5] [--json PATH]   # CUDA GPU, no weights needed
  python scripts/benchmark.py --profile random --smoke [--json PATH]      # a CPU: CI's smoke run
"""

from __future__ import annotations

import sys

from devtools.packages import missing_packages


def run() -> None:
    # The package check comes before the model imports, so that a machine without e.g. diffusers hears
    # which wheels to carry, not an ImportError from deep inside the package.
    if missing := missing_packages():
        sys.exit(
            "scripts/benchmark.py: missing packages: "
            + ", ".join(missing)
            + ". Install them (pip install --no-deps <wheel> for each carried wheel) and run again."
        )
    from devtools.benchmark import main

    main()


if __name__ == "__main__":
    run()
