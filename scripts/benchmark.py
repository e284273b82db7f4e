"""Performance table: cost per speed, memory budget and the serving code measured (devtools/benchmark/).

Usage:
  python scripts/benchmark.py --profile tiny [--weights-dir DIR] [--runs 5] [--quick] [--json PATH]
  python scripts/benchmark.py --profile production [--weights-dir weights]   # on a CUDA GPU
  python scripts/benchmark.py --profile random [--runs 5] [--speeds Turbo,Default] [--compile on|off]
                              [--json PATH]                                 # CUDA GPU, no weights needed
  python scripts/benchmark.py --profile random --smoke [--json PATH]      # a CPU: CI's smoke run
"""

from __future__ import annotations

import sys

from devtools.packages import preflight


def run() -> None:
    # The preflight comes before the benchmark's own imports: it imports what the serving code imports,
    # so that a machine without e.g. diffusers or pillow_heif hears which wheels to carry, not an
    # ImportError from deep inside the package, and sees which installed versions differ from the pins.
    checked = preflight()
    if not checked.ok:
        sys.exit(f"scripts/benchmark.py: {checked.failure_message()}")
    from devtools.benchmark import main

    main(checked=checked)


if __name__ == "__main__":
    run()
