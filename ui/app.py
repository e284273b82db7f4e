"""The browser page (`make ui`): a Gradio form for a running Cog server of this model, built from the
server's /openapi.json, with a brush to paint the inpainting region, progress from the server's logs, the
lines that reproduce an image, and a gallery of this page's outputs.

    SERVER=http://localhost:5000 .venv-ui/bin/python -m ui

Environment: SERVER (default http://localhost:5000), UI_PORT (default 7860), UI_HOST (default 127.0.0.1),
UI_WEBHOOK_HOST (default 127.0.0.1: the address on which the server reaches this page's webhook receiver for
progress; set it to this machine's address when the server runs in a container or elsewhere),
UI_WEBHOOK_PORT (default 0: any free port).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from ui.client import (
    Field,
    Report,
    Server,
    WebhookReceiver,
    contract_fields,
    data_uri_of_file,
    data_uri_of_image,
    image_of_data_uri,
    mask_from_strokes,
)

# The contract's inpainting pair: `image` is painted on in the editor and `mask` made from the strokes.
# Every other input gets the control its type calls for.
IMAGE_FIELD, MASK_FIELD = "image", "mask"
# Enums with this many values or fewer are radio buttons, longer ones drop-downs.
RADIO_MAX_CHOICES = 4
BRUSH_COLOUR = ("#ff2d95", 0.6)


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
        return gr.Image(
            type="filepath", label=f"{field.title}: {field.description}", elem_id=elem_id, height=320
        )
    lines = 3 if field.name == "prompt" else 1
    return gr.Textbox(value=field.default, lines=lines, elem_id=elem_id, **common)


def inputs_for_server(fields: list[Field], values: dict, out_dir: Path) -> tuple[dict, Image.Image | None]:
    """The prediction's `input` object from the controls' values, and the mask made from painted strokes
    (None when none were painted). Empty optional inputs are left out: Cog 0.23 refuses an explicit null.

    Raises gr.Error when both a mask is painted and one is uploaded (which to use would be a guess)."""
    inputs: dict = {}
    painted_mask = None
    for field in fields:
        value = values.get(field.name)
        if field.name == IMAGE_FIELD:
            editor = value or {}
            background = editor.get("background")
            if background is None:
                continue
            background = background.convert("RGB")
            inputs[IMAGE_FIELD] = data_uri_of_image(background)
            painted_mask = mask_from_strokes(background, editor.get("layers") or [])
        elif field.name == MASK_FIELD:
            continue  # decided below, once the strokes are known
        elif field.kind == "file":
            if value:
                inputs[field.name] = data_uri_of_file(value)
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
        raise gr.Error("A region is painted on the image and a mask is uploaded too: clear one of them.")
    if painted_mask is not None:
        inputs[MASK_FIELD] = data_uri_of_image(painted_mask)
        painted_mask.save(out_dir / "mask-sent.png")
    elif uploaded_mask:
        inputs[MASK_FIELD] = data_uri_of_file(uploaded_mask)
    return inputs, painted_mask


def inpainting_controls(fields: list, controls: dict[str, gr.components.Component]) -> gr.Image:
    """The inpainting accordion: an image editor to paint the region on, a mask upload, and the preview of
    the mask the strokes make (returned). Adds the image and mask controls to `controls`."""
    with gr.Accordion("Inpainting: paint the region to regenerate", open=True):
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
                controls[MASK_FIELD] = gr.Image(
                    type="filepath",
                    label=f"Or upload a mask. {mask_field.description}",
                    elem_id=f"input-{MASK_FIELD}",
                    height=240,
                )
            return gr.Image(
                label="Mask from the strokes (black = regenerate)",
                interactive=False,
                elem_id="mask-preview",
                height=240,
                format="png",
            )


def build(server: Server) -> gr.Blocks:
    """The page for `server`, whose /openapi.json must answer (waited for up to a minute)."""
    fields = contract_fields(server.openapi(wait_seconds=60))
    names = [field.name for field in fields]
    out_dir = Path(tempfile.mkdtemp(prefix="open-character-ui-"))

    with gr.Blocks(title="open-character") as page:
        gr.Markdown(
            f"## open-character\nA consistent character from one reference image. Server: `{server.url}`. "
            "For inpainting, upload an image and paint the region to regenerate: the page sends the "
            "contract's mask (black = regenerate, white = keep) at the image's size."
        )
        last_report = gr.State(None)
        history = gr.State([])
        controls: dict[str, gr.components.Component] = {}
        with gr.Row():
            with gr.Column(scale=1):
                for field in fields:
                    if field.name in (IMAGE_FIELD, MASK_FIELD):
                        continue
                    controls[field.name] = control(field)
                mask_preview = inpainting_controls(fields, controls)
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                status = gr.Markdown("Ready.", elem_id="status")
                output = gr.Image(label="Output", interactive=False, elem_id="output", format="png")
                report = gr.Markdown("", elem_id="report")
                with gr.Row():
                    reuse_seed = gr.Button("Reuse seed", elem_id="reuse-seed")
                    send_back = gr.Button(
                        "Send the used prompt back (magic prompt Off)", elem_id="send-prompt-back"
                    )
                gallery = gr.Gallery(
                    label="Outputs since this page was opened",
                    elem_id="gallery",
                    columns=4,
                    height=280,
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

        def run(gallery_items, *values):
            inputs, painted_mask = inputs_for_server(
                fields, dict(zip(ordered_names, values, strict=True)), out_dir
            )
            gallery_items = list(gallery_items or [])
            yield {status: "Sending the request...", mask_preview: painted_mask}
            for update in server.predict(inputs):
                if update.kind in ("busy", "progress"):
                    yield {status: update.text}
                    continue
                prediction = update.prediction or {}
                if prediction.get("status") != "succeeded":
                    # The server's own sentence, as it is.
                    yield {status: f"**Failed:** {prediction.get('error') or prediction.get('status')}"}
                    return
                found = Report.from_logs(prediction.get("logs") or "")
                image = image_of_data_uri(prediction["output"])
                path = out_dir / f"output-{len(gallery_items) + 1:03d}-seed-{found.seed}.png"
                image.save(path)
                gallery_items.append((str(path), f"seed {found.seed}"))
                yield {
                    status: "Done.",
                    output: str(path),
                    report: found.markdown(),
                    gallery: gallery_items,
                    history: gallery_items,
                    last_report: found,
                }

        generate.click(
            run,
            [history, *ordered],
            [status, output, report, gallery, history, last_report, mask_preview],
            show_progress="minimal",
        )

        def seed_of(found: Report | None):
            if found is None or found.seed is None:
                raise gr.Error("No output yet: generate an image first.")
            return str(found.seed)

        def prompt_of(found: Report | None):
            if found is None or found.prompt_used is None:
                raise gr.Error("No output yet: generate an image first.")
            # The preset that ran, so that Auto cannot choose another one from the rewritten prompt.
            return found.prompt_used, "Off", found.style if found.style in style_choices else gr.skip()

        style_choices = next((f.choices for f in fields if f.name == "style_type"), ())
        if "seed" in controls:
            reuse_seed.click(seed_of, last_report, controls["seed"])
        if {"prompt", "magic_prompt_option", "style_type"} <= controls.keys():
            send_back.click(
                prompt_of,
                last_report,
                [controls["prompt"], controls["magic_prompt_option"], controls["style_type"]],
            )
    return page


def main() -> int:
    server_url = os.environ.get("SERVER", "http://localhost:5000")
    webhook_host = os.environ.get("UI_WEBHOOK_HOST", "127.0.0.1")
    receiver = WebhookReceiver(
        "0.0.0.0" if webhook_host not in ("127.0.0.1", "localhost") else "127.0.0.1",
        int(os.environ.get("UI_WEBHOOK_PORT", "0")),
        advertised_host=webhook_host,
    )
    try:
        page = build(Server(server_url, receiver))
    except Exception as error:  # the one thing a user must fix before the page can exist
        print(
            f"Cannot read {server_url}/openapi.json ({error}): start the server (make serve) or set SERVER."
        )
        return 1
    page.queue().launch(
        server_name=os.environ.get("UI_HOST", "127.0.0.1"),
        server_port=int(os.environ.get("UI_PORT", "7860")),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
