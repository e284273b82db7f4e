"""The browser page (`make ui`): a Gradio form for a running Cog server of this model, built from the
server's /openapi.json, with a brush to paint the inpainting region, progress from the server's logs, a
Cancel button, what the server decided for each image, the request as curl and Python, and a gallery of
this page's outputs.

    SERVER=http://localhost:5000 .venv-ui/bin/python -m ui

Environment: SERVER (default http://localhost:5000), UI_PORT (default 7860), UI_HOST (default 127.0.0.1),
UI_WEBHOOK_HOST (default 127.0.0.1: the address on which the server reaches this page's webhook receiver for
progress; set it to this machine's address when the server runs in a container or elsewhere),
UI_WEBHOOK_PORT (default 0: any free port).
"""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw

from ui.client import (
    Field,
    Report,
    Server,
    ServerUnreachable,
    WebhookReceiver,
    abbreviated,
    contract_fields,
    curl_snippet,
    data_uri_of_file,
    error_sentence,
    image_of_data_uri,
    mask_from_strokes,
    python_snippet,
)

ROOT = Path(__file__).resolve().parent.parent
# The contract's inpainting pair: `image` is painted on in the editor and `mask` made from the strokes.
# Every other input gets the control its type calls for.
IMAGE_FIELD, MASK_FIELD = "image", "mask"
# The inputs shown at once beside Generate; every other one is in the folded "Advanced inputs".
MAIN_FIELDS = ("prompt", "character_reference_image", "rendering_speed")
# Enums with this many values or fewer are radio buttons, longer ones drop-downs.
RADIO_MAX_CHOICES = 4
BRUSH_COLOUR = ("#ff2d95", 0.6)
MAX_IMAGES_PER_CLICK = 4
# The contract's largest seed; seed + 1, seed + 2 ... wrap around to 0 past it.
SEED_LIMIT = 2**31

# Public-domain photos the repository ships (sources in evaluation/README.md).
EILEEN_COLLINS = ROOT / "evaluation" / "references" / "eileen_collins.jpg"
GRACE_HOPPER = ROOT / "evaluation" / "references" / "grace_hopper.jpg"
OBAMA = ROOT / "tests" / "data" / "faces" / "obama_portrait_2012.jpg"
BIDEN = ROOT / "tests" / "data" / "faces" / "biden_blue_room_2010.jpg"
# The inpainting example's region on BIDEN (295x320): his head, as an ellipse (left, top, right, bottom).
BIDEN_HEAD = (62, 28, 222, 222)

TIPS = """**Tips.** One clear, well-lit reference with the face or character large in the frame works best.
Describe the scene, not the person: the reference gives the identity. Turbo is the fastest speed for
trying prompts; keep a seed you like (**Reuse seed**) and switch to Quality. For inpainting, open
*Inpainting*, upload an image and paint the region to regenerate: the rest of the image is kept.
Several images per click (*Advanced inputs*) use the seeds N, N+1, ... one request each."""

CSS = """
#progress .bar { height: 8px; border-radius: 4px; background: var(--neutral-200); overflow: hidden; }
#progress .bar > div { height: 100%; background: var(--color-accent); transition: width 0.2s; }
#status p { margin: 0; }
"""


def image_file(**options) -> gr.Image:
    """An image upload (gr.Image, type "filepath") that hands the page the file as uploaded when this
    environment's Pillow cannot open it (a text file, a HEIC photo), instead of failing before the page's
    function runs (Gradio then shows bare "Error" badges and no sentence). The server reads the file and,
    if it is no image it can use, refuses it with a sentence naming the input, shown in the status.

    The instance's preprocess is replaced rather than subclassed: Gradio writes a .pyi stub next to the
    module of every Component subclass."""
    image = gr.Image(type="filepath", **options)
    strict = gr.Image.preprocess

    def preprocess(payload):
        try:
            return strict(image, payload)
        except Exception:  # noqa: BLE001 - any file Pillow cannot open goes to the server as it is
            return str(payload.path) if payload is not None and payload.path else None

    image.preprocess = preprocess
    return image


def control(field: Field) -> gr.components.Component:
    """The Gradio control for one contract input: its title, description and default from the schema."""
    common = {"label": field.title, "info": field.description} if field.kind != "file" else {}
    elem_id = f"input-{field.name}"
    if field.kind == "enum":
        kind = gr.Radio if len(field.choices) <= RADIO_MAX_CHOICES else gr.Dropdown
        return kind(choices=list(field.choices), value=field.default, elem_id=elem_id, **common)
    if field.kind == "integer":
        # A text box, not gr.Number: Number shows an empty value as 0, and an optional integer such as the
        # seed must be able to stay empty. The server checks the value (422 naming the field).
        return gr.Textbox(
            value="" if field.default is None else str(field.default),
            placeholder="empty: random" if not field.required else "",
            elem_id=elem_id,
            **common,
        )
    if field.kind == "number":
        return gr.Number(value=field.default, elem_id=elem_id, **common)
    if field.kind == "boolean":
        return gr.Checkbox(value=bool(field.default), elem_id=elem_id, **common)
    if field.kind == "file":
        return image_file(label=f"{field.title}: {field.description}", elem_id=elem_id, height=210)
    lines = 2 if field.name == "prompt" else 1
    return gr.Textbox(value=field.default, lines=lines, elem_id=elem_id, **common)


class PageError(Exception):
    """Something the user must change on the page before a request can go; the message says what."""


def inputs_for_server(
    fields: list[Field], values: dict, folder: Path
) -> tuple[dict, dict[str, Path], Image.Image | None]:
    """The prediction's `input` object from the controls' values, the file each image input was read from
    (the exact bytes sent; painted images and masks are written to `folder` as PNG), and the mask made
    from painted strokes (None when none were painted). Empty optional inputs are left out: Cog 0.23
    refuses an explicit null.

    Raises PageError when both a mask is painted and one is uploaded (which to use would be a guess)."""
    inputs: dict = {}
    files: dict[str, Path] = {}
    painted_mask = None
    for field in fields:
        value = values.get(field.name)
        if field.name == IMAGE_FIELD:
            editor = value or {}
            background = editor.get("background")
            if background is None:
                continue
            background = background.convert("RGB")
            files[IMAGE_FIELD] = folder / f"{IMAGE_FIELD}.png"
            background.save(files[IMAGE_FIELD])
            painted_mask = mask_from_strokes(background, editor.get("layers") or [])
        elif field.name == MASK_FIELD:
            continue  # decided below, once the strokes are known
        elif field.kind == "file":
            if value:
                files[field.name] = Path(value)
        elif value is None or (isinstance(value, str) and not value.strip() and not field.required):
            continue
        elif field.kind == "integer":
            text = str(value).strip()
            # Anything but an integer goes as typed, for the server to refuse with its own words.
            inputs[field.name] = int(text) if re.fullmatch(r"-?\d+", text) else text
        else:
            inputs[field.name] = value
    uploaded_mask = values.get(MASK_FIELD)
    if painted_mask is not None and uploaded_mask:
        raise PageError("A region is painted on the image and a mask is uploaded too: clear one of them.")
    if painted_mask is not None:
        files[MASK_FIELD] = folder / f"{MASK_FIELD}.png"
        painted_mask.save(files[MASK_FIELD])
    elif uploaded_mask:
        files[MASK_FIELD] = Path(uploaded_mask)
    # In the contract's order, each image as a data URI of the file's own bytes.
    ordered = {}
    for field in fields:
        if field.name in files:
            ordered[field.name] = data_uri_of_file(files[field.name])
        elif field.name in inputs:
            ordered[field.name] = inputs[field.name]
    return ordered, files, painted_mask


def inpainting_controls(fields: list, controls: dict[str, gr.components.Component]) -> tuple:
    """The inpainting accordion, folded: an image editor to paint the region on, a mask upload, and the
    preview of the mask the strokes make. Adds the image and mask controls to `controls`; returns the
    accordion and the preview."""
    with gr.Accordion(
        "Inpainting: paint the region to regenerate", open=False, elem_id="inpainting"
    ) as accordion:
        image_field = next((f for f in fields if f.name == IMAGE_FIELD), None)
        mask_field = next((f for f in fields if f.name == MASK_FIELD), None)
        if image_field:
            controls[IMAGE_FIELD] = gr.ImageEditor(
                type="pil",
                image_mode="RGBA",
                label=f"{image_field.title}: {image_field.description}",
                brush=gr.Brush(colors=[BRUSH_COLOUR], color_mode="fixed"),
                layers=False,
                transforms=(),
                elem_id=f"input-{IMAGE_FIELD}",
            )
        with gr.Row():
            if mask_field:
                controls[MASK_FIELD] = image_file(
                    label="Or upload a mask (black = regenerate, white = keep)",
                    elem_id=f"input-{MASK_FIELD}",
                    height=240,
                )
            preview = gr.Image(
                label="Mask from the strokes (black = regenerate)",
                interactive=False,
                elem_id="mask-preview",
                height=240,
                format="png",
            )
    return accordion, preview


def progress_html(fraction: float | None, text: str = "") -> str:
    """The progress bar: `fraction` of the click's work done (0 to 1), or an empty bar when None."""
    percent = 0 if fraction is None else round(100 * min(max(fraction, 0.0), 1.0))
    return (
        f'<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{percent}"><div style="width: {percent}%"></div></div>'
        f"<small>{html.escape(text)}</small>"
    )


def example_mask(folder: Path) -> Path:
    """The inpainting example's mask: BIDEN's size, black (regenerate) over his head, white elsewhere."""
    size = Image.open(BIDEN).size
    mask = Image.new("L", size, 255)
    ImageDraw.Draw(mask).ellipse(BIDEN_HEAD, fill=0)
    path = folder / "example-mask.png"
    mask.save(path)
    return path


def examples_of(folder: Path) -> list[tuple[str, dict]]:
    """The clickable examples: (label, the inputs each one fills in), on the public-domain photos the
    repository ships; the inpainting one's mask is written to `folder`."""
    return [
        (
            "Astronaut, Turbo, magic prompt Off",
            {
                "prompt": "an astronaut reading a book in a cozy library, warm light",
                "character_reference_image": str(EILEEN_COLLINS),
                "rendering_speed": "Turbo",
                "magic_prompt_option": "Off",
            },
        ),
        (
            "Watercolor, Default",
            {
                "prompt": "a watercolor portrait of a woman in a sunny garden",
                "character_reference_image": str(GRACE_HOPPER),
                "rendering_speed": "Default",
            },
        ),
        (
            "Hiking photo, Quality",
            {
                "prompt": "a man hiking in the mountains at sunrise, photo",
                "character_reference_image": str(OBAMA),
                "rendering_speed": "Quality",
            },
        ),
        (
            "Inpainting: a new head in a photo",
            {
                "prompt": "an astronaut in the Blue Room of the White House",
                "character_reference_image": str(EILEEN_COLLINS),
                "rendering_speed": "Turbo",
                "magic_prompt_option": "Off",
                IMAGE_FIELD: str(BIDEN),
                MASK_FIELD: str(example_mask(folder)),
            },
        ),
    ]


@dataclass
class Job:
    """A session's running click, for its Cancel button: the prediction under way, and whether to stop."""

    prediction_id: str | None = None
    cancelled: bool = False
    running: bool = False


@dataclass
class Result:
    """One image of a click, with what the page shows for it."""

    path: str
    report: Report
    logs: str
    request_json: str
    curl: str
    python: str


def report_markdown(result: Result, index: int, count: int) -> str:
    title = (
        f"**Image {index + 1} of {count}** (select another in the results to see its own)\n\n"
        if count > 1
        else ""
    )
    return title + result.report.markdown()


def read_openapi(server: Server) -> dict:
    """The server's /openapi.json: a server still in its setup is waited for up to a minute, an address
    where nothing answers raises ServerUnreachable within seconds."""
    return server.openapi(wait_seconds=60, on_wait=lambda text: print(text, file=sys.stderr, flush=True))


def build(server: Server, openapi: dict | None = None) -> gr.Blocks:
    """The page for `server`, its controls from `openapi` (read from the server when None, see
    read_openapi)."""
    fields = contract_fields(openapi if openapi is not None else read_openapi(server))
    names = [field.name for field in fields]
    out_dir = Path(tempfile.mkdtemp(prefix="open-character-ui-"))
    requests_made = itertools.count(1)
    style_choices = next((f.choices for f in fields if f.name == "style_type"), ())

    with gr.Blocks(title="open-character") as page:
        gr.Markdown(
            f"### open-character · a consistent character from one reference image · server `{server.url}`"
        )
        session_job = gr.State(Job())
        last_report = gr.State(None)
        results = gr.State([])
        history = gr.State([])
        controls: dict[str, gr.components.Component] = {}
        with gr.Row():
            with gr.Column(scale=1):
                for field in fields:
                    if field.name in MAIN_FIELDS:
                        controls[field.name] = control(field)
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", interactive=False, scale=1)
                status = gr.Markdown("Ready.", elem_id="status")
                progress = gr.HTML(progress_html(None), elem_id="progress")
                with gr.Accordion("Advanced inputs", open=False, elem_id="advanced"):
                    images_per_click = gr.Slider(
                        1,
                        MAX_IMAGES_PER_CLICK,
                        value=1,
                        step=1,
                        label="Images per click",
                        info="One request per image, with the seeds N, N+1, ...",
                        elem_id="images-per-click",
                    )
                    randomize = gr.Checkbox(
                        value=True,
                        label="Randomize seed (the server chooses one; the seed below is ignored)",
                        elem_id="randomize-seed",
                    )
                    for field in fields:
                        if field.name not in MAIN_FIELDS and field.name not in (IMAGE_FIELD, MASK_FIELD):
                            controls[field.name] = control(field)
                inpainting, mask_preview = inpainting_controls(fields, controls)
                examples = examples_of(out_dir)
                example_names = [
                    n for n in names if n in controls and any(n in values for _, values in examples)
                ]
                examples = [
                    (label, values) for label, values in examples if values.keys() <= set(example_names)
                ]
                gr.Examples(
                    [[values.get(name) for name in example_names] for _, values in examples],
                    [controls[name] for name in example_names],
                    label="Examples: click one to fill in the form (the last one inpaints)",
                    elem_id="examples",
                    example_labels=[label for label, _ in examples],
                )
                gr.Markdown(TIPS, elem_id="tips")
            with gr.Column(scale=1):
                output = gr.Gallery(
                    label="Output",
                    elem_id="output",
                    columns=2,
                    height=420,
                    object_fit="contain",
                    preview=False,
                    format="png",
                    type="filepath",
                    interactive=False,
                )
                report = gr.Markdown("", elem_id="report")
                with gr.Row():
                    reuse_seed = gr.Button("Reuse seed", elem_id="reuse-seed", interactive=False)
                    send_back = gr.Button(
                        "Send the used prompt back (magic prompt Off)",
                        elem_id="send-prompt-back",
                        interactive=False,
                    )
                with gr.Accordion(
                    "Logs: everything the server logged for this image", open=False, elem_id="logs-panel"
                ):
                    logs = gr.Code("", language=None, elem_id="logs", lines=8, max_lines=30)
                with gr.Accordion("API: this request as curl and Python", open=False, elem_id="api"):
                    gr.Markdown(
                        "The model's own HTTP API (Cog's `POST /predictions`), with the inputs this page "
                        "just sent. Images travel as data URIs: the request's JSON below shortens them, "
                        "the curl line sends the whole body the page saved, and the Python script reads "
                        "each image from the file the page sent (put your own paths there)."
                    )
                    request_json = gr.Code(
                        "", language="json", label="Inputs", elem_id="api-json", wrap_lines=True, max_lines=40
                    )
                    curl = gr.Code(
                        "", language="shell", label="curl", elem_id="api-curl", wrap_lines=True, max_lines=40
                    )
                    python = gr.Code(
                        "",
                        language="python",
                        label="Python",
                        elem_id="api-python",
                        wrap_lines=True,
                        max_lines=60,
                    )
                gallery = gr.Gallery(
                    label="Outputs since this page was opened",
                    elem_id="gallery",
                    columns=4,
                    height=200,
                    preview=False,
                    format="png",
                    buttons=["download"],
                    type="filepath",
                )
        ordered = [controls[name] for name in names if name in controls]
        ordered_names = [name for name in names if name in controls]

        def show_mask(editor):
            background = (editor or {}).get("background")
            if background is None:
                return None
            return mask_from_strokes(background, editor.get("layers") or [])

        if IMAGE_FIELD in controls:
            controls[IMAGE_FIELD].change(
                show_mask, controls[IMAGE_FIELD], mask_preview, trigger_mode="always_last"
            )
        if MASK_FIELD in controls:
            # An uploaded mask (or the inpainting example) unfolds the panel, so that the user sees it.
            controls[MASK_FIELD].change(
                lambda mask: gr.Accordion(open=True) if mask else gr.skip(), controls[MASK_FIELD], inpainting
            )

        def run(job: Job, gallery_items, count, randomize_seed, *values):
            # The session's Job, shared with its Cancel button (a gr.State holds one object per session).
            job.prediction_id, job.cancelled, job.running = None, False, True
            gallery_items = list(gallery_items or [])
            running = {cancel: gr.update(interactive=True), generate: gr.update(interactive=False)}
            idle = {cancel: gr.update(interactive=False), generate: gr.update(interactive=True)}
            done: list[Result] = []
            try:
                yield from click(job, gallery_items, int(count), randomize_seed, values, done, running)
            except Exception as error:  # noqa: BLE001 - every failure is one sentence in the status
                text = str(error) if isinstance(error, PageError) else f"{type(error).__name__}: {error}"
                yield {status: f"**Failed:** {text}", progress: progress_html(None), **idle}
            finally:
                job.running = False
            yield idle

        def click(job, gallery_items, count, randomize_seed, values, done, running):
            values = dict(zip(ordered_names, values, strict=True))
            if randomize_seed:
                values["seed"] = ""
            number = next(requests_made)
            folder = out_dir / f"request-{number:03d}"
            folder.mkdir()
            inputs, files, painted_mask = inputs_for_server(fields, values, folder)
            yield {
                status: "Sending the request...",
                progress: progress_html(0, "Sending the request"),
                mask_preview: painted_mask,
                output: [],
                results: [],
                **running,
            }
            base_seed = inputs.get("seed")
            for index in range(count):
                these = dict(inputs)
                if index > 0:
                    if not isinstance(base_seed, int):
                        break  # a seed the server refused on the first request
                    these["seed"] = (base_seed + index) % SEED_LIMIT
                job.prediction_id = f"page-{uuid.uuid4().hex}"
                prefix = f"Image {index + 1} of {count}: " if count > 1 else ""
                prediction = None
                for update in server.predict(
                    these, prediction_id=job.prediction_id, cancelled=lambda: job.cancelled
                ):
                    if update.kind in ("busy", "progress"):
                        fraction = (index + (update.step / update.total if update.step else 0)) / count
                        yield {
                            status: prefix + update.text,
                            progress: progress_html(fraction, prefix + update.text),
                        }
                    else:
                        prediction = update.prediction or {}
                state = prediction.get("status")
                if state == "canceled":
                    yield {
                        status: f"Cancelled{f' after {index} of {count} images' if count > 1 else ''}.",
                        progress: progress_html(None, "Cancelled"),
                    }
                    return
                if state != "succeeded":
                    sentence = error_sentence(str(prediction.get("error") or state))
                    yield {
                        status: f"**Failed:** {prefix}{sentence}",
                        progress: progress_html(None),
                        logs: prediction.get("logs") or "",
                    }
                    return
                found = Report.from_logs(prediction.get("logs") or "")
                if base_seed is None or not isinstance(base_seed, int):
                    base_seed = found.seed
                image = image_of_data_uri(prediction["output"])
                path = out_dir / f"output-{len(gallery_items) + 1:03d}-seed-{found.seed}.png"
                image.save(path)
                gallery_items.append((str(path), f"seed {found.seed}"))
                body_path = folder / f"request-{index + 1}.json"
                body_path.write_text(json.dumps({"input": these}), encoding="utf-8")
                done.append(
                    Result(
                        path=str(path),
                        report=found,
                        logs=prediction.get("logs") or "",
                        request_json=json.dumps({"input": abbreviated(these)}, indent=2, ensure_ascii=False),
                        curl=curl_snippet(server.url, body_path),
                        python=python_snippet(server.url, these, files, seed=found.seed),
                    )
                )
                first = done[0]
                yield {
                    status: "Done." if index + 1 == count else f"{prefix}done.",
                    progress: progress_html(
                        (index + 1) / count, "Done" if index + 1 == count else prefix + "done"
                    ),
                    output: [(r.path, f"seed {r.report.seed}") for r in done],
                    results: list(done),
                    report: report_markdown(first, 0, len(done)),
                    logs: first.logs,
                    request_json: first.request_json,
                    curl: first.curl,
                    python: first.python,
                    gallery: gallery_items,
                    history: gallery_items,
                    last_report: first.report,
                    reuse_seed: gr.update(interactive=True),
                    send_back: gr.update(interactive=True),
                }

        generate.click(
            run,
            [session_job, history, images_per_click, randomize, *ordered],
            [
                status,
                progress,
                output,
                results,
                report,
                logs,
                request_json,
                curl,
                python,
                gallery,
                history,
                last_report,
                mask_preview,
                reuse_seed,
                send_back,
                cancel,
                generate,
            ],
            show_progress="hidden",
        )

        def cancel_click(job: Job):
            if not job.running:
                return gr.skip()
            job.cancelled = True
            if job.prediction_id:
                server.cancel(job.prediction_id)
            return "Cancelling..."

        cancel.click(cancel_click, session_job, status, show_progress="hidden")

        def select_result(chosen: list[Result], event: gr.SelectData):
            if not chosen or event.index is None or event.index >= len(chosen):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            result = chosen[event.index]
            return (
                report_markdown(result, event.index, len(chosen)),
                result.logs,
                result.request_json,
                result.curl,
                result.python,
                result.report,
            )

        output.select(select_result, results, [report, logs, request_json, curl, python, last_report])

        def seed_of(found: Report | None):
            if found is None or found.seed is None:
                return gr.skip(), gr.skip()
            return str(found.seed), False

        def prompt_of(found: Report | None):
            if found is None or found.prompt_used is None:
                return gr.skip(), gr.skip(), gr.skip()
            # The preset that ran, so that Auto cannot choose another one from the rewritten prompt.
            return found.prompt_used, "Off", found.style if found.style in style_choices else gr.skip()

        if "seed" in controls:
            reuse_seed.click(seed_of, last_report, [controls["seed"], randomize])
            # A seed typed in means this seed: randomizing would ignore it.
            controls["seed"].input(
                lambda text: False if text.strip() else gr.skip(), controls["seed"], randomize
            )
        if {"prompt", "magic_prompt_option", "style_type"} <= controls.keys():
            send_back.click(
                prompt_of,
                last_report,
                [controls["prompt"], controls["magic_prompt_option"], controls["style_type"]],
            )
    return page


def main(openapi: dict | None = None) -> int:
    """Serve the page for $SERVER; `openapi`: its /openapi.json when the caller has read it already."""
    server_url = os.environ.get("SERVER", "http://localhost:5000")
    webhook_host = os.environ.get("UI_WEBHOOK_HOST", "127.0.0.1")
    receiver = WebhookReceiver(
        "0.0.0.0" if webhook_host not in ("127.0.0.1", "localhost") else "127.0.0.1",
        int(os.environ.get("UI_WEBHOOK_PORT", "0")),
        advertised_host=webhook_host,
    )
    try:
        page = build(Server(server_url, receiver), openapi)
    except ServerUnreachable as error:  # the one thing a user must fix before the page can exist
        print(error, file=sys.stderr)
        return 1
    except KeyError as error:
        print(
            f"{server_url}/openapi.json is not a Cog model's schema (no {error}): check SERVER.",
            file=sys.stderr,
        )
        return 1
    page.queue().launch(
        server_name=os.environ.get("UI_HOST", "127.0.0.1"),
        server_port=int(os.environ.get("UI_PORT", "7860")),
        # The model's HTTP API is in the page's API panel; Gradio's own endpoints are the page's insides.
        footer_links=["gradio", "settings"],
        css=CSS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
