"""The evaluation's yardstick: the face metric on real photos, the summary, and the tiny end-to-end run."""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
from pathlib import Path

import pytest
from PIL import Image

from devtools.evaluation import CAPTION_HEIGHT, DlibEmbedder, Sample, summarize, summary_table
from model.identity.faces import cosine_similarity

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "faces"
REFERENCES = ROOT / "evaluation" / "references"
# Real photos (sources and licences: evaluation/README.md), by person.
PEOPLE = {
    "obama": [FACES / "obama_portrait_2012.jpg", FACES / "obama_congress_2009.jpg"],
    "biden": [FACES / "biden_blue_room_2010.jpg"],
    "collins": [REFERENCES / "eileen_collins.jpg"],
    "hopper": [REFERENCES / "grace_hopper.jpg"],
}


@pytest.fixture(scope="module")
def dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder()


def test_dlib_scores_the_same_person_closer_than_two_different_people(dlib_embedder):
    embeddings = {
        (person, path.name): dlib_embedder.embed(Image.open(path))
        for person, paths in PEOPLE.items()
        for path in paths
    }
    assert all(embedding is not None for embedding in embeddings.values()), embeddings.keys()
    same, different = [], []
    for (a, a_vec), (b, b_vec) in itertools.combinations(embeddings.items(), 2):
        (same if a[0] == b[0] else different).append((cosine_similarity(a_vec, b_vec), a[1], b[1]))
    assert len(same) == 1 and len(different) == 9
    # Every same-person pair is closer than every pair of two different people.
    assert min(same)[0] > max(different)[0], (same, max(different))


def test_dlib_finds_no_face_in_a_photo_without_one(dlib_embedder):
    from skimage import data

    assert dlib_embedder.embed(Image.fromarray(data.coffee())) is None


def _sample(speed: str, face: float | None, clip_t: float, seconds: float) -> Sample:
    return Sample("ref.jpg", 0, "a prompt", speed, "Realistic", 0, "images/x.png", face, clip_t, seconds)


def test_summary_per_speed_counts_faceless_outputs_apart():
    samples = [
        _sample("Turbo", 0.6, 0.30, 1.0),
        _sample("Turbo", None, 0.20, 3.0),
        _sample("Turbo", 0.4, 0.25, 2.0),
        _sample("Quality", None, 0.10, 9.0),
    ]
    turbo, quality = summarize(samples)
    assert (turbo.speed, turbo.images, quality.speed, quality.images) == ("Turbo", 3, "Quality", 1)
    assert turbo.face_mean == pytest.approx(0.5)
    assert turbo.face_std == pytest.approx(statistics.pstdev([0.6, 0.4]))
    assert turbo.no_face_share == pytest.approx(1 / 3)
    assert turbo.clip_t_mean == pytest.approx(0.25)
    assert turbo.seconds_median == 2.0
    assert quality.face_mean is None and quality.no_face_share == 1.0
    assert summary_table([turbo, quality])[3] == "| Quality | 1 | n/a | n/a | 100% | 0.100 | 0.000 | 9.00 |"


@pytest.mark.slow
def test_tiny_end_to_end_writes_the_table_the_json_and_the_contact_sheet(tiny_weights, tmp_path, capsys):
    from devtools.evaluate import TINY_WARNING, main

    # The tiny colour-blob detector sees faces in these two (not in Grace Hopper's photo, whose flag it
    # takes for a small face), so CI runs on them; on tiny weights the outputs are noise.
    references = tmp_path / "references"
    references.mkdir()
    for path in (PEOPLE["collins"][0], PEOPLE["obama"][0]):
        shutil.copy(path, references / path.name)
    out, tile = tmp_path / "out", 128
    main(
        [
            *("--weights-dir", str(tiny_weights), "--references", str(references), "--max-prompts", "2"),
            *("--speeds", "Turbo", "--styles", "Realistic", "--magic-prompt", "Off"),
            *("--out", str(out), "--tile", str(tile)),
        ]
    )
    stdout = capsys.readouterr().out
    assert stdout.count(TINY_WARNING) == 2  # before the run and under the table
    assert "| speed | images | face sim. mean |" in stdout
    assert "| Turbo | 4 |" in stdout

    result = json.loads((out / "evaluation.json").read_text())
    assert result["profile"] == "tiny" and result["warning"] == TINY_WARNING
    assert [row["speed"] for row in result["summary"]] == ["Turbo"]
    assert result["summary"][0]["images"] == 4
    samples = result["samples"]
    assert {(s["reference"], s["prompt_index"]) for s in samples} == {
        (name, index) for name in ("eileen_collins.jpg", "obama_portrait_2012.jpg") for index in (0, 1)
    }
    for sample in samples:
        assert Image.open(out / sample["image"]).size == (1024, 1024)
        assert -1.0 <= sample["clip_t"] <= 1.0
        assert sample["seconds"] > 0

    # Two rows (references); the reference then two outputs per row; a caption strip under each tile.
    with Image.open(out / "contact_sheet.png") as sheet:
        sheet.load()
        assert sheet.format == "PNG"
        assert sheet.size == (3 * tile, 2 * (tile + CAPTION_HEIGHT))
