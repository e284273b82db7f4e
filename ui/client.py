"""What the browser page needs from the Cog HTTP API, without Gradio: the contract's inputs read from the
server's own `/openapi.json`, predictions with progress from Cog's webhook events, the lines of a
prediction's logs a user reproduces an image with, and the inpainting mask made from painted strokes.

Kept apart from `ui/app.py` so that it can be tested without a browser, and so that the page never holds a
second copy of the contract: every input name, type, enum, default and description comes from the server.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import mimetypes
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

# Cog's terminal prediction states (its PredictionResponse's Status enum).
TERMINAL = ("succeeded", "failed", "canceled")
BUSY_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Field:
    """One input of the contract, as the server's /openapi.json declares it.

    kind: "file" (a `format: uri` string), "enum", "integer", "number", "boolean" or "string".
    """

    name: str
    kind: str
    title: str
    description: str
    required: bool
    default: object = None
    choices: tuple = ()
    maximum: float | None = None
    minimum: float | None = None


def contract_fields(openapi: dict) -> list[Field]:
    """The inputs of `openapi`'s `Input` schema in the server's order (`x-order`), enums resolved through
    their `$ref`. Raises KeyError when the document has no `components.schemas.Input` (not a Cog server)."""
    schemas = openapi["components"]["schemas"]
    input_schema = schemas["Input"]
    required = set(input_schema.get("required", ()))
    fields = []
    ordered = sorted(input_schema["properties"].items(), key=lambda item: item[1].get("x-order", 1_000))
    for name, prop in ordered:
        refs = [part["$ref"] for part in prop.get("allOf", ()) if "$ref" in part]
        if "$ref" in prop:
            refs.append(prop["$ref"])
        target = schemas[refs[0].rsplit("/", 1)[-1]] if refs else prop
        if "enum" in target:
            kind = "enum"
        elif target.get("type") == "string" and target.get("format") == "uri":
            kind = "file"
        else:
            kind = target.get("type", "string")
        fields.append(
            Field(
                name=name,
                kind=kind,
                title=prop.get("title") or name.replace("_", " ").capitalize(),
                description=prop.get("description", ""),
                required=name in required,
                default=prop.get("default"),
                choices=tuple(target.get("enum", ())),
                maximum=prop.get("maximum"),
                minimum=prop.get("minimum"),
            )
        )
    return fields


@dataclass(frozen=True)
class Report:
    """What the server decided for one prediction, read from its logs (see README, Logs and metrics): the
    lines that reproduce its image and those that judge it.

    style is the preset that ran (`Fiction`, `Realistic`), read from `Style: NAME (template)`; style_cues
    the cue words Auto chose it by (None when the style was named in the request, or the logs have no
    such line); magic_prompt the outcome of the magic prompt ("Off, prompt kept as given", "rejected
    (...)"); generation_seconds the server's own `Image generation took S seconds`. Each is None when the
    logs have no such line.
    """

    seed: int | None = None
    prompt_used: str | None = None
    style: str | None = None
    style_line: str | None = None
    style_cues: str | None = None
    magic_prompt: str | None = None
    generation_seconds: float | None = None
    adapters: str | None = None
    identity_similarity: str | None = None
    safety_checker: str | None = None

    @classmethod
    def from_logs(cls, logs: str) -> Report:
        # Each pattern is anchored to a whole line, and lines end at "\n" alone (re.M's ^ and $): the
        # server writes every other line break escaped (model/logs.py), so no text it echoes, such as a
        # prompt holding "\nIdentity similarity: 0.99", can pass for one of its own lines.
        def last(pattern: str) -> re.Match | None:
            found = list(re.finditer(pattern, logs, flags=re.M))
            return found[-1] if found else None

        seed = last(r"^Using seed: (-?\d+)$")
        prompt = last(r"^Prompt used: (.*)$")
        # The preset line names its template in brackets; "Style: Auto chose ..." is the choice, not it.
        style = last(r"^Style: (\w+) \((.*)\)$")
        chose = last(r"^Style: Auto chose \w+ \(cues: (.*)\)$")
        # "Magic prompt: Off, prompt kept as given", "Magic prompt: On, rewritten by ...", "Magic prompt
        # rejected (...) ...", "Magic prompt failed (...) ..."; not the setup's "loaded"/"warmed up" lines.
        magic = last(r"^Magic prompt(?:: ((?:Auto|On|Off)\b.*)| ((?:rejected|failed) .*))$")
        took = last(r"^Image generation took ([\d.]+) seconds$")
        adapters = last(r"^Adapters: (.*)$")
        identity = last(r"^Identity similarity: (.*)$")
        safety = last(r"^Safety checker: (.*)$")
        return cls(
            seed=int(seed.group(1)) if seed else None,
            prompt_used=prompt.group(1) if prompt else None,
            style=style.group(1) if style else None,
            style_line=style.group(0).removeprefix("Style: ") if style else None,
            style_cues=chose.group(1) if chose else None,
            magic_prompt=(magic.group(1) or magic.group(2)) if magic else None,
            generation_seconds=float(took.group(1)) if took else None,
            adapters=adapters.group(1) if adapters else None,
            identity_similarity=identity.group(1) if identity else None,
            safety_checker=safety.group(1) if safety else None,
        )

    def style_text(self) -> str | None:
        """The preset that ran, and how: "Fiction (Auto chose it by the cues: knight)" or "Fiction (as
        asked)"."""
        if self.style is None:
            return None
        if self.style_cues is None:
            return f"{self.style} (as asked)"
        if self.style_cues == "none":
            return f"{self.style} (Auto's default: no cue words in the prompt)"
        return f"{self.style} (Auto chose it by the cues: {self.style_cues})"

    def rows(self) -> list[tuple[str, object]]:
        """(name, value) for each thing the page shows beside an image; value None when not logged."""
        seconds = None if self.generation_seconds is None else f"{self.generation_seconds:.2f} s"
        return [
            ("Seed", self.seed),
            ("Style", self.style_text()),
            ("Magic prompt", self.magic_prompt),
            ("Prompt used", self.prompt_used),
            ("Generation time", seconds),
            ("Adapters", self.adapters),
            ("Identity similarity", self.identity_similarity),
            ("Safety checker", self.safety_checker),
        ]

    def markdown(self) -> str:
        return "\n".join(f"- **{name}:** {'—' if value is None else value}" for name, value in self.rows())


def last_step(logs: str) -> str | None:
    """The last `Step N/total` line of the logs (the server logs every 5 steps and the last)."""
    found = step_numbers(logs)
    return f"Step {found[0]}/{found[1]}" if found else None


def step_numbers(logs: str) -> tuple[int, int] | None:
    """(N, total) of the last `Step N/total` line of the logs; None when there is none yet."""
    found = re.findall(r"^Step (\d+)/(\d+)$", logs, flags=re.M)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


# What Cog 0.23 puts before a predictor's exception message in a prediction's `error`: "Prediction failed: "
# (twice, from two of its layers), then the exception's class name. The sentence is the rest.
_COG_ERROR_PREFIX = re.compile(r"^(?:Prediction failed:\s*)+")
_EXCEPTION_CLASS = re.compile(r"^[A-Z]\w*(?:Error|Exception|Refused|Exit|Interrupt): ")


def error_sentence(error: str) -> str:
    """A failed prediction's `error` as the sentence its predictor raised: Cog's "Prediction failed: "
    prefixes and the exception's class name ("InputError: ") removed; any other text is kept as it is."""
    return _EXCEPTION_CLASS.sub("", _COG_ERROR_PREFIX.sub("", error.strip()), count=1)


def mask_from_strokes(background: Image.Image, layers: list[Image.Image]) -> Image.Image | None:
    """The contract's inpainting mask for the strokes painted over `background`: an opaque "L" image of the
    background's exact size, 0 (black, regenerated) wherever any layer has a painted (non-transparent) pixel
    and 255 (white, kept) elsewhere. None when nothing is painted.

    Layers of another size than the background (a canvas the editor scaled) are resized to it with
    nearest-neighbour sampling, so the mask stays two-toned.
    """
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in layers:
        if layer is None:
            continue
        alpha = layer.getchannel("A") if "A" in layer.getbands() else None
        if alpha is None:
            continue
        if alpha.size != background.size:
            alpha = alpha.resize(background.size, Image.Resampling.NEAREST)
        painted |= np.asarray(alpha) > 0
    if not painted.any():
        return None
    return Image.fromarray(np.where(painted, 0, 255).astype(np.uint8), mode="L")


def data_uri_of_file(path: str | Path) -> str:
    """A file's bytes as a data URI, so that the server gets the file as the user chose it."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def data_uri_of_image(image: Image.Image) -> str:
    """A PIL image as a PNG data URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_of_data_uri(uri: str) -> Image.Image:
    """The image in a data URI (Cog returns outputs this way when it has no upload URL)."""
    return Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2])))


class WebhookReceiver:
    """An HTTP server that takes Cog's webhook events (`start`, `logs`, `completed`) and hands each
    prediction's events to whoever waits on that prediction's token.

    coglet 0.23 has no `GET /predictions/{id}` to poll (it answers 405) and serves SSE only for streaming
    predictors, so webhooks are the only way to see a prediction's logs while it runs.
    """

    def __init__(self, host: str, port: int = 0, advertised_host: str | None = None):
        self._queues: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                token = self.path.rstrip("/").rsplit("/", 1)[-1]
                with receiver._lock:
                    events = receiver._queues.get(token)
                if events is not None:
                    events.put(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # one line per event would drown the page's own log
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]
        self.host = advertised_host or host

    def open(self) -> tuple[str, queue.Queue]:
        """A fresh webhook URL and the queue its events arrive on."""
        token = uuid.uuid4().hex
        events: queue.Queue = queue.Queue()
        with self._lock:
            self._queues[token] = events
        return f"http://{self.host}:{self.port}/webhook/{token}", events

    def close(self, url: str) -> None:
        with self._lock:
            self._queues.pop(url.rsplit("/", 1)[-1], None)

    def shutdown(self) -> None:
        self._server.shutdown()


@dataclass(frozen=True)
class Update:
    """One thing to show while a prediction runs: `busy` (HTTP 409, retrying), `progress` (text, e.g.
    `Step 5/8`, with step and total when the server has logged a step), or `done` with the server's final
    prediction object (or an HTTP error's detail)."""

    kind: str
    text: str = ""
    prediction: dict | None = None
    step: int | None = None
    total: int | None = None


class ServerUnreachable(ConnectionError):
    """Nothing answers at the server's address, or it never became ready; the message says what to do."""


# How long `Server.openapi` waits for a port on which nothing listens: a server started in the same moment
# opens its port within a second or two, long before its setup ends.
REFUSED_SECONDS = 5.0


class Server:
    """A Cog server at `url` (e.g. http://localhost:5000)."""

    def __init__(self, url: str, receiver: WebhookReceiver | None = None):
        self.url = url.rstrip("/")
        self.receiver = receiver

    def openapi(
        self,
        wait_seconds: float = 0,
        refused_seconds: float = REFUSED_SECONDS,
        on_wait: Callable[[str], None] | None = None,
    ) -> dict:
        """The server's /openapi.json. A server that answers but is not ready yet (its setup runs) is
        waited for up to `wait_seconds`, `on_wait` told why once; an address where nothing answers for
        `refused_seconds` (no server started, a wrong port) is given up on at once.

        Raises ServerUnreachable, its message naming the address and how to start a server."""
        started = time.monotonic()
        told = False
        while True:
            try:
                response = requests.get(f"{self.url}/openapi.json", timeout=10)
                if response.ok:
                    return response.json()
                reason = f"it answers HTTP {response.status_code} to /openapi.json"
                answered = True
            except requests.ConnectionError as error:
                reason, answered = f"nothing answers there ({type(error).__name__})", False
            except requests.RequestException as error:
                reason, answered = f"{type(error).__name__}: {error}", True
            waited = time.monotonic() - started
            limit = wait_seconds if answered else min(refused_seconds, wait_seconds or refused_seconds)
            if waited >= limit:
                raise ServerUnreachable(
                    f"Cannot reach the model server at {self.url}: {reason}. Start it in another terminal "
                    "(`make serve`, or `make serve-tiny` for the tiny profile) "
                    "and set SERVER to its address, e.g. `SERVER=http://localhost:5000 make ui`."
                )
            if answered and on_wait and not told:
                on_wait(f"The server at {self.url} is not ready yet ({reason}); waiting {wait_seconds:.0f} s")
                told = True
            time.sleep(0.5)

    def cancel(self, prediction_id: str) -> bool:
        """Ask the server to cancel a prediction (Cog's POST /predictions/{id}/cancel); whether it knew
        the prediction (HTTP 200; 404 for one not started yet or already over)."""
        try:
            response = requests.post(f"{self.url}/predictions/{prediction_id}/cancel", timeout=10)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def predict(
        self,
        inputs: dict,
        poll_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        prediction_id: str | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[Update]:
        """Run one prediction, yielding updates as it goes and a `done` update last.

        The request is synchronous (the response carries the output, so the page works even where the
        server cannot reach the webhook), with a webhook for the `logs` events that tell the progress. It
        is created under `prediction_id` (Cog's PUT /predictions/{id}; a fresh id when None), so that it
        can be cancelled: once `cancelled()` turns true, the cancel request is sent (again at each poll
        until the server knows the prediction) and the server's `canceled` prediction ends the run; while
        the server is busy, the run ends there with a `canceled` prediction of the page's own. One Cog
        container runs one prediction at a time and answers 409 to the next: that is retried every
        second, with a `busy` update each time."""
        prediction_id = prediction_id or uuid.uuid4().hex
        webhook, events = self.receiver.open() if self.receiver else (None, queue.Queue())
        payload: dict = {"input": inputs}
        if webhook:
            payload |= {"webhook": webhook, "webhook_events_filter": ["start", "logs", "completed"]}
        result: dict = {}

        def post():
            try:
                response = requests.put(f"{self.url}/predictions/{prediction_id}", json=payload, timeout=3600)
                result["status_code"] = response.status_code
                try:
                    result["body"] = response.json()
                except ValueError:
                    result["body"] = {"error": response.text}
            except requests.RequestException as error:
                result["status_code"] = None
                result["body"] = {"error": f"The server at {self.url} did not answer: {error}"}

        def cancel_when_asked() -> bool:
            return cancelled() and self.cancel(prediction_id)

        try:
            attempt = 0
            while True:
                attempt += 1
                if cancelled():
                    yield Update("done", prediction={"id": prediction_id, "status": "canceled"})
                    return
                thread = threading.Thread(target=post, daemon=True)
                thread.start()
                yield from progress_updates(thread, events, poll_seconds, cancel_when_asked)
                if result["status_code"] == 409:
                    yield Update("busy", f"The server is busy with another prediction; retrying ({attempt})")
                    sleep(BUSY_RETRY_SECONDS)
                    continue
                yield Update("done", prediction=final_body(result["status_code"], result["body"]))
                return
        finally:
            if webhook:
                self.receiver.close(webhook)


def progress_updates(
    thread: threading.Thread,
    events: queue.Queue,
    poll_seconds: float,
    cancel: Callable[[], bool] = lambda: False,
) -> Iterator[Update]:
    """While the request's thread runs, a `progress` update each time the latest webhook event's step
    line changes; `cancel` is called at each poll until it returns True (the cancel request went through)."""
    shown = None
    cancel_sent = False
    while thread.is_alive():
        thread.join(poll_seconds)
        if not cancel_sent:
            cancel_sent = cancel()
        latest = None
        while not events.empty():
            latest = events.get_nowait()
        if latest is not None:
            logs = latest.get("logs") or ""
            numbers = step_numbers(logs)
            text = f"Step {numbers[0]}/{numbers[1]}" if numbers else "Started: reading the inputs"
            if text != shown:
                shown = text
                step, total = numbers or (None, None)
                yield Update("progress", text, step=step, total=total)


def final_body(status_code: int | None, body: dict) -> dict:
    """The prediction as the page shows it: a refused request (an HTTP error, a 422) as a failed one."""
    if status_code not in (200, 201) and "status" not in body:
        return {"status": "failed", "error": http_error_sentence(status_code, body)}
    if status_code == 422:
        return {"status": "failed", "error": http_error_sentence(422, body)}
    return body


def http_error_sentence(status_code: int | None, body: dict) -> str:
    """The server's own words for a refused request: FastAPI-style 422 details joined, else its `error`."""
    detail = body.get("detail")
    if isinstance(detail, list):
        parts = []
        for item in detail:
            where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "input"))
            parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(parts)
    if detail:
        return str(detail)
    return str(body.get("error") or f"HTTP {status_code}")


# How much of a data URI the page shows in the request's JSON: its media type and the first characters.
DATA_URI_SHOWN_CHARS = 40


def abbreviated(inputs: dict) -> dict:
    """`inputs` with each data URI cut to its start and its size: "data:image/png;base64,iVBO… (5120
    bytes)". The JSON a user can read; the request itself carries the whole file."""

    def short(value):
        if isinstance(value, str) and value.startswith("data:"):
            size = len(base64.b64decode(value.partition(",")[2]))
            return f"{value[:DATA_URI_SHOWN_CHARS]}… ({size} bytes)"
        return value

    return {name: short(value) for name, value in inputs.items()}


def curl_snippet(url: str, body_path: Path) -> str:
    """The shell line that sends the request body saved at `body_path` (images inline as data URIs) to
    the server at `url` and writes the output to output.png."""
    save = (
        "import base64, json, sys; p = json.load(sys.stdin); print(p.get('error') or p['logs']); "
        "p.get('output') and open('output.png', 'wb').write(base64.b64decode(p['output'].partition(',')[2]))"
    )
    return (
        "# The request this page sent (its inputs; images inline as data URIs), saved by the page.\n"
        "# A 409 means the server is busy with another prediction: send it again.\n"
        f"curl -sS -X POST {url}/predictions -H 'Content-Type: application/json' \\\n"
        f"  --data-binary @{body_path} \\\n"
        f'  | python3 -c "{save}"\n'
    )


def python_snippet(url: str, inputs: dict, files: dict[str, Path], seed: int | None = None) -> str:
    """A Python script that sends `inputs` to the server at `url`, each image input read from the file in
    `files` (the bytes the page sent: substitute your own paths), and writes the output to output.png.
    `seed`: the seed the server chose when the request left it to it, told in a comment."""
    lines = []
    for name, value in inputs.items():
        shown = f"data_uri({str(files[name])!r})" if name in files else repr(value)
        lines.append(f"    {name!r}: {shown},")
    if "seed" not in inputs and seed is not None:
        lines.append(f"    # 'seed': {seed},  # the seed the server chose: set it to get the same image")
    body = "\n".join(lines)
    return f'''import base64
import mimetypes
import pathlib

import requests


def data_uri(path):
    """A file as a data URI, the way the server takes images."""
    path = pathlib.Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{{mime}};base64," + base64.b64encode(path.read_bytes()).decode()


inputs = {{
{body}
}}
# A 409 means the server is busy with another prediction: send it again.
prediction = requests.post("{url}/predictions", json={{"input": inputs}}, timeout=3600).json()
if prediction["status"] != "succeeded":
    raise SystemExit(prediction.get("error") or prediction["status"])
pathlib.Path("output.png").write_bytes(base64.b64decode(prediction["output"].partition(",")[2]))
print(prediction["logs"])
'''
