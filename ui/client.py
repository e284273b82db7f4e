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
    """The lines of a prediction's logs that reproduce or judge its image (see README, Logs and metrics).

    style is the preset that ran (`Fiction`, `Realistic`), read from `Style: NAME (template)`; None when the
    logs have no such line.
    """

    seed: int | None = None
    prompt_used: str | None = None
    style: str | None = None
    style_line: str | None = None
    adapters: str | None = None
    identity_similarity: str | None = None

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
        adapters = last(r"^Adapters: (.*)$")
        identity = last(r"^Identity similarity: (.*)$")
        return cls(
            seed=int(seed.group(1)) if seed else None,
            prompt_used=prompt.group(1) if prompt else None,
            style=style.group(1) if style else None,
            style_line=style.group(0).removeprefix("Style: ") if style else None,
            adapters=adapters.group(1) if adapters else None,
            identity_similarity=identity.group(1) if identity else None,
        )

    def markdown(self) -> str:
        rows = [
            ("Seed", self.seed),
            ("Prompt used", self.prompt_used),
            ("Style", self.style_line),
            ("Adapters", self.adapters),
            ("Identity similarity", self.identity_similarity),
        ]
        return "\n".join(f"- **{name}:** {'—' if value is None else value}" for name, value in rows)


def last_step(logs: str) -> str | None:
    """The last `Step N/total` line of the logs (the server logs every 5 steps and the last)."""
    found = re.findall(r"^Step (\d+)/(\d+)$", logs, flags=re.M)
    return f"Step {found[-1][0]}/{found[-1][1]}" if found else None


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
    `Step 5/8`), or `done` with the server's final prediction object (or an HTTP error's detail)."""

    kind: str
    text: str = ""
    prediction: dict | None = None


class Server:
    """A Cog server at `url` (e.g. http://localhost:5000)."""

    def __init__(self, url: str, receiver: WebhookReceiver | None = None):
        self.url = url.rstrip("/")
        self.receiver = receiver

    def openapi(self, wait_seconds: float = 0) -> dict:
        """The server's /openapi.json, retried for up to `wait_seconds` while it is not answering (a server
        still starting). Raises requests.RequestException when it never answers."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                response = requests.get(f"{self.url}/openapi.json", timeout=10)
                response.raise_for_status()
                return response.json()
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def predict(
        self, inputs: dict, poll_seconds: float = 0.2, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[Update]:
        """Run one prediction, yielding updates as it goes and a `done` update last.

        The request is synchronous (the response carries the output, so the page works even where the
        server cannot reach the webhook), with a webhook for the `logs` events that tell the progress. One
        Cog container runs one prediction at a time and answers 409 to the next: that is retried every
        second, with a `busy` update each time."""
        webhook, events = self.receiver.open() if self.receiver else (None, queue.Queue())
        payload: dict = {"input": inputs}
        if webhook:
            payload |= {"webhook": webhook, "webhook_events_filter": ["start", "logs", "completed"]}
        result: dict = {}

        def post():
            try:
                response = requests.post(f"{self.url}/predictions", json=payload, timeout=3600)
                result["status_code"] = response.status_code
                try:
                    result["body"] = response.json()
                except ValueError:
                    result["body"] = {"error": response.text}
            except requests.RequestException as error:
                result["status_code"] = None
                result["body"] = {"error": f"The server at {self.url} did not answer: {error}"}

        try:
            attempt = 0
            while True:
                attempt += 1
                thread = threading.Thread(target=post, daemon=True)
                thread.start()
                yield from progress_updates(thread, events, poll_seconds)
                if result["status_code"] == 409:
                    yield Update("busy", f"The server is busy with another prediction; retrying ({attempt})")
                    sleep(BUSY_RETRY_SECONDS)
                    continue
                yield Update("done", prediction=final_body(result["status_code"], result["body"]))
                return
        finally:
            if webhook:
                self.receiver.close(webhook)


def progress_updates(thread: threading.Thread, events: queue.Queue, poll_seconds: float) -> Iterator[Update]:
    """While the request's thread runs, a `progress` update each time the latest webhook event's step
    line changes."""
    shown = None
    while thread.is_alive():
        thread.join(poll_seconds)
        latest = None
        while not events.empty():
            latest = events.get_nowait()
        if latest is not None:
            text = last_step(latest.get("logs") or "") or "Started: reading the inputs"
            if text != shown:
                shown = text
                yield Update("progress", text)


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
