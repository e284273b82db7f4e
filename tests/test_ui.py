"""The browser page (`make ui`, ui/) in a real headless Chromium, driven by Playwright, against the live Cog
server on the tiny profile. A recording proxy between the page and the server keeps every request the page
sends, so the tests check the mask that was really sent, not the page's word for it.

The page runs in its own virtual environment (.venv-ui, requirements-ui.txt) as `make ui` runs it; the
browser is Debian's chromium package (`make test` installs both when missing). Screenshots are written to
outputs/ui-screenshots/.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from tests.helpers import ROOT
from tests.helpers.cog_server import free_port
from tests.helpers.images import data_uri, decode_image, pixels

pytestmark = [pytest.mark.server, pytest.mark.browser]

UI_PYTHON = ROOT / ".venv-ui" / "bin" / "python"
SCREENSHOTS = ROOT / "outputs" / "ui-screenshots"
FAST = {"rendering_speed": "Turbo", "magic_prompt_option": "Off"}


class RecordingProxy:
    """Forwards every request to `target` and keeps the JSON bodies of the predictions created (POST
    /predictions, PUT /predictions/{id}), the ids they were created under, and the ids cancelled."""

    def __init__(self, target: str):
        self.sent: list[dict] = []
        self.ids: list[str | None] = []
        self.cancelled: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def forward(self, method: str):
                body = (
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    if method in ("POST", "PUT")
                    else None
                )
                created = re.fullmatch(r"/predictions(?:/([^/]+))?", self.path)
                if created and method in ("POST", "PUT"):
                    proxy.sent.append(json.loads(body))
                    proxy.ids.append(created.group(1))
                cancel = re.fullmatch(r"/predictions/([^/]+)/cancel", self.path)
                if cancel and method == "POST":
                    proxy.cancelled.append(cancel.group(1))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "prefer")}
                response = requests.request(
                    method, target + self.path, data=body, headers=headers, timeout=600
                )
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def do_GET(self):
                self.forward("GET")

            def do_POST(self):
                self.forward("POST")

            def do_PUT(self):
                self.forward("PUT")

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self):
        self._server.shutdown()


@pytest.fixture(scope="module")
def proxy(cog_server):
    recording = RecordingProxy(cog_server.url)
    yield recording
    recording.close()


@pytest.fixture(scope="module")
def ui_url(proxy, tmp_path_factory):
    """The page, started as `make ui` starts it, talking to the server through the proxy."""
    assert UI_PYTHON.exists(), (
        "the page's environment is missing: `make ui-venv` (make test does it) creates it"
    )
    port = free_port()
    log_path = tmp_path_factory.mktemp("ui") / "ui.log"
    env = {**os.environ, "SERVER": proxy.url, "UI_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(UI_PYTHON), "-m", "ui"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the page exited:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(url, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the page did not answer in 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium package is missing: `apt-get install chromium` (make test does it)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_url, request):
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page.goto(ui_url)
    page.wait_for_selector("#generate")
    # Every text the status line shows, however briefly, so that a test can look back at the progress.
    page.evaluate(
        """() => {
            window.statuses = [];
            const node = document.querySelector('#status');
            new MutationObserver(() => window.statuses.push(node.innerText)).observe(
                node, {subtree: true, childList: true, characterData: true});
        }"""
    )
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    page.close()


def unfold(page, panel: str, inside: str) -> None:
    """Open the folded panel (gr.Accordion) with the elem_id `panel`, if `inside`, a selector of something
    in it, is not shown (Gradio renders a folded panel's contents only once it is opened)."""
    if page.locator(inside).count() == 0:
        page.locator(f"#{panel} > button.label-wrap").click()
    expect(page.locator(inside).first).to_be_visible()


def fill_in(page, reference: Path, prompt: str, **choices: str) -> None:
    page.locator("#input-character_reference_image input[type=file]").set_input_files(str(reference))
    page.locator("#input-prompt textarea").fill(prompt)
    for name, value in choices.items():
        unfold(page, "advanced", f"#input-{name}")
        page.locator(f"#input-{name}").get_by_label(value, exact=True).check()


SETTLED = "() => /^(Done\\.|Failed:|Cancelled)/.test(document.querySelector('#status').innerText.trim())"


def generate(page, timeout_s: float = 180) -> str:
    """Click Generate and wait for the status to settle; returns the final status text."""
    page.locator("#generate").click()
    page.wait_for_function(SETTLED, timeout=timeout_s * 1000)
    return page.locator("#status").inner_text().strip()


def code_text(page, elem_id: str) -> str:
    """The whole text of a gr.Code panel, as its Download button saves it (CodeMirror draws only some of
    the lines)."""
    href = page.locator(f"#{elem_id} a[download]").first.get_attribute("href")
    return page.evaluate("async href => await (await fetch(href)).text()", href)


@pytest.fixture(scope="module")
def reference_file(portrait, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ui-files") / "reference.png"
    portrait.save(path)
    return path


def set_images_per_click(page, count: int) -> None:
    unfold(page, "advanced", "#images-per-click")
    field = page.locator("#images-per-click input[type=number]")
    field.fill(str(count))
    field.press("Enter")


def test_generate_shows_progress_the_images_and_what_the_server_decided(
    page, proxy, cog_server, reference_file, portrait
):
    """Upload, generate two images while the server is busy with another request (409, retried): see the
    progress, the images, what the server decided and the request as curl and Python; then reuse the
    seed and send the used prompt back with magic prompt Off. Two images per click are two ordinary
    predictions, the server's random seed and that seed + 1."""
    fill_in(page, reference_file, "a knight in a forest", **FAST)
    set_images_per_click(page, 2)
    # Nothing to reuse before there is an output.
    expect(page.locator("#reuse-seed")).to_be_disabled()
    expect(page.locator("#send-prompt-back")).to_be_disabled()
    # Keep the server busy so that the page's first request gets 409.
    busy = threading.Thread(
        target=cog_server.predict,
        kwargs={"prompt": "busy", "character_reference_image": data_uri(portrait), **FAST},
    )
    busy.start()
    time.sleep(0.5)
    sent_before = len(proxy.sent)
    final = generate(page)
    busy.join()
    assert final == "Done.", final

    statuses = page.evaluate("window.statuses")
    assert any("busy" in text for text in statuses), statuses
    assert any(re.fullmatch(r"Image 1 of 2: Step \d+/8", text.strip()) for text in statuses), statuses
    assert any(re.fullmatch(r"Image 2 of 2: Step \d+/8", text.strip()) for text in statuses), statuses
    assert page.locator("#progress [role=progressbar]").get_attribute("aria-valuenow") == "100"
    report = page.locator("#report").inner_text()
    assert "Image 1 of 2" in report, report
    assert "Prompt used: a knight in a forest" in report, report
    seed = int(re.search(r"Seed: (\d+)", report).group(1))
    assert re.search(r"Adapters: (PuLID|FaceID) \d\.\d\d", report), report
    assert "Identity similarity:" in report, report
    # What the server decided, beside the output.
    assert "Magic prompt: Off, prompt kept as given" in report, report
    assert "Style: Fiction (Auto chose it by the cues: knight)" in report, report
    assert re.search(r"Generation time: \d+\.\d\d s", report), report
    unfold(page, "logs-panel", "#logs")
    assert f"Using seed: {seed}\n" in code_text(page, "logs")

    # One request per image: the first leaves the seed to the server, the second is that seed + 1.
    # The requests by prediction id: a request refused with 409 is sent again under the same id.
    made = dict(
        zip(proxy.ids[sent_before:], (body["input"] for body in proxy.sent[sent_before:]), strict=True)
    )
    assert len(made) == 2, list(made)
    first, second = made.values()
    assert first["prompt"] == "a knight in a forest" and first["rendering_speed"] == "Turbo", first
    assert "seed" not in first  # randomized: the server chooses, as the contract says
    assert second == {**first, "seed": seed + 1}, "the second request differs beyond its seed"
    captions = page.locator("#output .caption-label").all_inner_texts()
    assert [text.strip() for text in captions] == [f"seed {seed}", f"seed {seed + 1}"], captions
    assert page.locator("#output img").count() == 2
    assert page.locator("#gallery img").count() >= 2
    shown = Image.open(
        io.BytesIO(page.request.get(page.locator("#output img").first.get_attribute("src")).body())
    )
    assert shown.size == (1024, 1024), shown.size  # 1:1 at one megapixel

    # The model's HTTP API: the curl line sends the body the server got; the Python script its inputs.
    unfold(page, "api", "#api-curl")
    curl = code_text(page, "api-curl")
    body_path = Path(re.search(r"--data-binary @(\S+)", curl).group(1))
    # The same body, but for the webhook, which is the page's own plumbing for the progress.
    assert json.loads(body_path.read_text()) == {"input": first}
    python = code_text(page, "api-python")
    assert "'rendering_speed': 'Turbo'," in python and "data_uri('" in python, python
    assert "/predictions" in python and f"# 'seed': {seed}," in python, python
    assert page.get_by_text("Use via API").count() == 0  # Gradio's own endpoints are not the model's API

    page.locator("#reuse-seed").click()
    expect(page.locator("#input-seed textarea")).to_have_value(str(seed))
    expect(page.locator("#randomize-seed input")).not_to_be_checked()  # else the seed would be ignored
    page.locator("#send-prompt-back").click()
    expect(page.locator("#input-magic_prompt_option").get_by_label("Off", exact=True)).to_be_checked()
    expect(page.locator("#input-prompt textarea")).to_have_value("a knight in a forest")
    style = re.search(r"Style: (\w+) \(", report).group(1)
    expect(page.locator("#input-style_type").get_by_label(style, exact=True)).to_be_checked()


# The rectangle the inpainting test paints, in the scene's pixel coordinates: (left, top, right, bottom).
PAINTED = (100, 80, 220, 160)


def paint_rectangle(page, scene: Image.Image) -> None:
    """Upload `scene` into the editor and cover PAINTED with brush strokes, mapped to the screen by the
    editor's zoom (the image sits centred on its canvas at that zoom)."""
    editor = page.locator("#input-image")
    zoom_label = editor.get_by_text(re.compile(r"^\d+%$"))
    before = zoom_label.inner_text()
    path = SCREENSHOTS.parent / "ui-scene.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.save(path)
    editor.locator("input[type=file]").set_input_files(str(path))
    expect(zoom_label).not_to_have_text(before)  # the editor has fitted the image
    page.wait_for_timeout(500)
    scale = int(zoom_label.inner_text().rstrip("%")) / 100
    box = editor.locator("canvas").first.bounding_box()
    x0 = box["x"] + box["width"] / 2 - scene.width * scale / 2
    y0 = box["y"] + box["height"] / 2 - scene.height * scale / 2
    left, top, right, bottom = PAINTED
    # The rectangle's outline, then two rows across it, each a straight segment: a few pointer events, since
    # every one costs the software-rendered canvas a redraw. Rows 27 px apart leave no pixel of the
    # rectangle farther than the brush's radius (about 24 px on this image) from a stroke.
    third = (bottom - top) / 3
    path = [(right, top), (right, bottom), (left, bottom), (left, top), (left, top + third)]
    path += [(right, top + third), (right, bottom - third), (left, bottom - third)]
    editor.get_by_role("button", name="Brush", exact=True).click()
    page.mouse.move(x0 + left * scale, y0 + top * scale)
    page.mouse.down()
    for x, y in path:
        page.mouse.move(x0 + x * scale, y0 + y * scale)
    page.mouse.up()


def test_painted_rectangle_becomes_the_mask_sent_and_the_rest_is_kept(page, proxy, reference_file, portrait):
    """Paint a rectangle on an image and inpaint: the mask the page sent (read from the request itself) is
    the image's size, black exactly under the strokes (the rectangle widened by the brush's radius) and
    white elsewhere; the page shows that mask; the output keeps every white pixel of the image."""
    scene = portrait.resize((320, 240), Image.Resampling.LANCZOS)
    fill_in(page, reference_file, "a knight", **FAST)
    unfold(page, "inpainting", "#input-image")
    paint_rectangle(page, scene)
    final = generate(page)
    assert final == "Done.", final

    sent = proxy.sent[-1]["input"]
    image, mask = decode_image(sent["image"]), decode_image(sent["mask"])
    assert (pixels(image) == pixels(scene)).all()  # the editor sent the image untouched
    assert mask.mode == "L" and mask.size == scene.size, (mask.mode, mask.size)
    values = np.asarray(mask)
    assert set(np.unique(values)) == {0, 255}, np.unique(values)
    # The brush's radius, from how far the black reaches past the rectangle on each side.
    left, top, right, bottom = PAINTED
    ys, xs = np.nonzero(values == 0)
    reach = [left - xs.min(), top - ys.min(), xs.max() - right, ys.max() - bottom]
    assert max(reach) - min(reach) <= 3, reach
    radius = float(np.median(reach))
    # Distance of each pixel from the rectangle: black within the radius, white beyond, up to the
    # anti-aliased rim (2 px) and the screen-to-image rounding.
    grid_y, grid_x = np.mgrid[0 : scene.height, 0 : scene.width]
    dx = np.maximum(np.maximum(left - grid_x, grid_x - right), 0)
    dy = np.maximum(np.maximum(top - grid_y, grid_y - bottom), 0)
    distance = np.hypot(dx, dy)
    assert (values[distance <= radius - 2.5] == 0).all()
    assert (values[distance >= radius + 2.5] == 255).all()

    shown = page.locator("#mask-preview img").get_attribute("src")
    assert (np.asarray(Image.open(io.BytesIO(page.request.get(shown).body())).convert("L")) == values).all()

    src = page.locator("#output img").get_attribute("src")
    output = Image.open(io.BytesIO(page.request.get(src).body()))
    assert output.size == scene.size
    keep = values == 255
    assert (pixels(output)[keep] == pixels(scene)[keep]).all()
    assert (pixels(output)[~keep] != pixels(scene)[~keep]).any()


def test_blank_reference_shows_the_servers_sentence(page, reference_file, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), "white").save(blank)
    fill_in(page, blank, "a knight", **FAST)
    final = generate(page)
    assert final.startswith("Failed:"), final
    assert "character_reference_image is blank (one colour, or almost)" in final, final


def in_view(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return (
        box is not None
        and box["y"] >= 0
        and box["y"] + box["height"] <= size["height"]
        and (box["x"] >= 0 and box["x"] + box["width"] <= size["width"])
    )


def test_a_file_that_is_no_image_is_one_sentence_in_the_status_in_one_view(page, proxy, tmp_path):
    """At 1280x800, Generate, Cancel, the status and the progress bar are in the first view, the advanced
    inputs and the inpainting panel folded. A file that is no image as the reference reaches the server,
    and its refusal is one sentence in the status (no Cog prefix, no class name), not Gradio's bare
    badges."""
    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("window.scrollTo(0, 0)")
    for selector in ("#generate", "#cancel", "#status", "#progress", "#input-prompt"):
        assert in_view(page, selector), (selector, page.locator(selector).bounding_box())
    assert page.locator("#input-seed").count() == 0 and page.locator("#input-image").count() == 0  # folded
    expect(page.locator("#cancel")).to_be_disabled()  # nothing runs yet

    # A web page saved under an image's name, as a failed download leaves it: the browser takes the
    # file by its name, Pillow cannot open it.
    text_file = tmp_path / "download.jpg"
    text_file.write_text("<html><body>404 Not Found</body></html>\n")
    sent_before = len(proxy.sent)
    fill_in(page, text_file, "a knight")
    final = generate(page, timeout_s=60)
    assert final == (
        "Failed: character_reference_image is not a readable image (not an image format this server "
        "reads): send a JPEG, PNG, WebP or HEIC file"
    ), final
    assert len(proxy.sent) == sent_before + 1  # the server judged the file, not the page
    assert page.get_by_text("Error", exact=True).count() == 0
    assert in_view(page, "#status")


def test_an_example_click_fills_in_the_form(page):
    """The inpainting example fills in the form from the shipped public-domain photos: a reference, a
    prompt, a speed, the image to paint into and its mask, and unfolds the inpainting panel to show them.
    (Generating from a filled-in form is the other tests' part.)"""
    page.locator("#examples").get_by_text("Inpainting: a new head in a photo").click()
    expect(page.locator("#input-prompt textarea")).to_have_value(
        "an astronaut in the Blue Room of the White House"
    )
    expect(page.locator("#input-rendering_speed").get_by_label("Turbo", exact=True)).to_be_checked()
    expect(page.locator("#input-character_reference_image img").first).to_be_visible()
    # The panel unfolds with the image and its mask.
    expect(page.locator("#input-mask img").first).to_be_visible()
    expect(page.locator("#input-image canvas").first).to_be_visible()
    mask_src = page.locator("#input-mask img").first.get_attribute("src")
    mask = Image.open(io.BytesIO(page.request.get(mask_src).body()))
    assert mask.size == Image.open(ROOT / "tests" / "data" / "faces" / "biden_blue_room_2010.jpg").size
    unfold(page, "advanced", "#input-magic_prompt_option")
    expect(page.locator("#input-magic_prompt_option").get_by_label("Off", exact=True)).to_be_checked()


def test_cancel_cancels_the_prediction_on_the_server(page, proxy, cog_server, reference_file):
    """Cancel during a run: the page asks the server to cancel the prediction it created under its own
    id (Cog's POST /predictions/{id}/cancel), the server ends it as canceled, and it is ready again."""
    fill_in(page, reference_file, "a knight", rendering_speed="Quality", magic_prompt_option="Off")
    page.locator("#generate").click()
    page.wait_for_function(
        "() => /^(Started|Step)/.test(document.querySelector('#status').innerText.trim())", timeout=120_000
    )
    page.locator("#cancel").click()
    page.wait_for_function(SETTLED, timeout=60_000)
    assert page.locator("#status").inner_text().strip() == "Cancelled."
    assert proxy.ids[-1] and proxy.ids[-1] in proxy.cancelled, (proxy.ids[-1:], proxy.cancelled)
    assert cog_server.settles_ready()
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#generate")).to_be_enabled()


def test_the_page_fails_fast_naming_the_server_it_cannot_reach():
    """`make ui` with nothing at SERVER: a sentence naming the address and how to start a server, within
    seconds, not a minute of silence."""
    address = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    finished = subprocess.run(
        [str(UI_PYTHON), "-m", "ui"],
        cwd=ROOT,
        env={**os.environ, "SERVER": address, "GRADIO_ANALYTICS_ENABLED": "False"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - started
    assert finished.returncode == 1, finished
    assert f"Cannot reach the model server at {address}" in finished.stderr, finished.stderr
    assert "make serve" in finished.stderr, finished.stderr
    assert seconds < 15, seconds  # REFUSED_SECONDS (5 s); Gradio is imported only once the server answers
