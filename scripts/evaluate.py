"""Identity fidelity and prompt adherence of each identity adapter, PuLID and FaceID (devtools/evaluate.py).

Usage:
  python scripts/evaluate.py --weights-dir weights                    # production: the full set, on a GPU
  python scripts/evaluate.py --weights-dir .cache/tiny-weights --max-references 2 --max-prompts 2 \\
      --speeds Turbo --styles Realistic --magic-prompt Off           # the CI run (scores meaningless)
  python scripts/evaluate.py --weights-dir weights --adapters faceid  # one adapter (default pulid,faceid)
"""

from devtools.evaluate import main

if __name__ == "__main__":
    main()
