"""A small Python client for open-character (or ideogram-character's contract on any Cog server).

    python examples/client.py --prompt "a portrait in a garden" --reference me.jpg --out out.png
    python examples/client.py --server http://gpu-box:5000 --prompt "..." \
        --reference https://example.com/me.jpg --input rendering_speed=Turbo --input seed=42

Local files are sent as data URIs, http(s) URLs as they are (the server downloads them). The request waits
for the prediction; while the server is busy with another one (HTTP 409: one Cog container runs one
prediction at a time) it retries with backoff. The output (a data URI, or a URL when the server uploads its
outputs) is saved to --out; a failed prediction prints the server's error sentence alone (error_sentence).
Only `requests` is needed.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import re
import sys
import time
from pathlib import Path

import requests

FILE_INPUTS = ("character_reference_image", "image", "mask")
# Integer inputs of the contract; every other --input value is sent as a string.
INT_INPUTS = ("seed",)


# What Cog's server (coglet 0.23) wraps around the message of an exception raised in predict(): its
# "Prediction failed: " twice, then the exception's class name ("InputError: "). Cog offers no way for a
# model to return the sentence alone (docs/CONTRACT.md, errors).
_COGLET_WRAPPING = re.compile(
    r"^(?:Prediction failed: )+(?:[A-Z][A-Za-z0-9_]*(?:Error|Exception|Refused): )?"
)


class PredictionFailed(RuntimeError):
    """The server ran the prediction and it failed: the message is the server's error sentence."""


def error_sentence(error: str) -> str:
    """A failed prediction's `error` without coglet's wrapping: "Prediction failed: Prediction failed:
    InputError: mask is 1200x626 pixels and ..." -> "mask is 1200x626 pixels and ...". Text without that
    wrapping (another server, a later Cog) is returned as it is."""
    return _COGLET_WRAPPING.sub("", error, count=1)


def as_input(value: str) -> str:
    """An http(s) or data URL as it is; a local file as a data URI."""
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def post_with_retry(
    url: str, payload: dict, headers: dict | None = None, busy_timeout: float = 600, timeout: float = 900
) -> requests.Response:
    """POST, retrying while the server answers 409 (busy) for up to busy_timeout seconds."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.5
    while True:
        response = requests.post(url, json=payload, headers=headers or {}, timeout=timeout)
        if response.status_code != 409:
            return response
        if time.monotonic() + delay > deadline:
            response.raise_for_status()
        print(f"server busy (409), retrying in {delay:.1f} s", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 10)


def save_output(output: str, out: Path) -> Path:
    """Write the prediction's output, a data URI or a URL, to `out`."""
    if output.startswith("data:"):
        out.write_bytes(base64.b64decode(output.partition(",")[2]))
    else:
        download = requests.get(output, timeout=300)
        download.raise_for_status()
        out.write_bytes(download.content)
    return out


def predict(server: str, inputs: dict, busy_timeout: float = 600) -> dict:
    """Run one prediction and wait for it; return the finished prediction (status succeeded)."""
    payload = {
        "input": {k: as_input(v) if k in FILE_INPUTS and isinstance(v, str) else v for k, v in inputs.items()}
    }
    response = post_with_retry(f"{server.rstrip('/')}/predictions", payload, busy_timeout=busy_timeout)
    if response.status_code == 422:
        raise PredictionFailed(f"invalid input: {response.json().get('detail')}")
    response.raise_for_status()
    prediction = response.json()
    if prediction.get("status") != "succeeded":
        error = prediction.get("error")
        raise PredictionFailed(error_sentence(error) if error else f"status {prediction.get('status')}")
    return prediction


def parse_inputs(args: argparse.Namespace) -> dict:
    inputs: dict = {"prompt": args.prompt, "character_reference_image": args.reference}
    for name in ("image", "mask"):
        if getattr(args, name):
            inputs[name] = getattr(args, name)
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--input {item!r}: expected NAME=VALUE, e.g. --input rendering_speed=Turbo")
        inputs[key] = int(value) if key in INT_INPUTS else value
    return inputs


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--server", default="http://localhost:5000", help="the Cog server (default: %(default)s)"
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--reference", required=True, help="character_reference_image: a file or a URL")
    parser.add_argument("--image", help="image to paint the character into (file or URL); needs --mask")
    parser.add_argument("--mask", help="mask for --image, black = regenerated (file or URL)")
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=VALUE", help="any other input; repeatable"
    )
    parser.add_argument("--out", type=Path, default=Path("output.png"), help="where to save the image")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        prediction = predict(args.server, parse_inputs(args))
    except PredictionFailed as error:
        print(error, file=sys.stderr)
        return 1
    save_output(prediction["output"], args.out)
    seconds = (prediction.get("metrics") or {}).get("predict_time")
    print(f"saved {args.out}" + (f" ({seconds:.1f} s)" if seconds else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
