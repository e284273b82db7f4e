"""The evaluation's yardstick: the face metric on real photos, the summary, and the tiny end-to-end run."""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import weakref
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


def _sample(speed: str, face: float | None, clip_t: float, seconds: float, adapter: str = "pulid") -> Sample:
    return Sample(adapter, "ref.jpg", 0, "a prompt", speed, "Realistic", 0, "x.png", face, clip_t, seconds)


def test_summary_per_adapter_and_speed_counts_faceless_outputs_apart():
    samples = [
        _sample("Turbo", 0.6, 0.30, 1.0),
        _sample("Turbo", None, 0.20, 3.0),
        _sample("Turbo", 0.4, 0.25, 2.0),
        _sample("Turbo", 0.2, 0.40, 1.5),
        _sample("Quality", None, 0.10, 9.0),
        _sample("Turbo", 0.7, 0.35, 1.0, adapter="faceid"),
    ]
    turbo, quality, faceid_turbo = summarize(samples)
    assert [(row.adapter, row.speed, row.images) for row in (turbo, quality, faceid_turbo)] == [
        ("pulid", "Turbo", 4),
        ("pulid", "Quality", 1),
        ("faceid", "Turbo", 1),
    ]
    assert turbo.face_mean == pytest.approx(0.4)
    assert turbo.face_median == pytest.approx(0.4)
    assert turbo.face_std == pytest.approx(statistics.pstdev([0.6, 0.4, 0.2]))
    assert turbo.no_face_share == pytest.approx(1 / 4)
    assert turbo.clip_t_mean == pytest.approx(0.2875)
    assert turbo.clip_t_median == pytest.approx(0.275)
    assert turbo.seconds_median == 1.75
    assert quality.face_mean is None and quality.face_median is None and quality.no_face_share == 1.0
    assert faceid_turbo.face_mean == pytest.approx(0.7)
    table = summary_table([turbo, quality, faceid_turbo])
    assert table[0].startswith("| adapter | speed | images | face sim. mean | face sim. median |")
    assert table[3] == "| pulid | Quality | 1 | n/a | n/a | n/a | 100% | 0.100 | 0.100 | 0.000 | 9.00 |"
    assert table[4] == "| faceid | Turbo | 1 | 0.700 | 0.700 | 0.000 | 0% | 0.350 | 0.350 | 0.000 | 1.00 |"


def test_adapters_option_parses_a_comma_separated_list():
    from devtools.evaluate import parse_args

    assert parse_args([]).adapters == ["pulid", "faceid"]
    assert parse_args(["--adapters", "faceid"]).adapters == ["faceid"]
    assert parse_args(["--adapters", "FaceID, pulid,faceid"]).adapters == ["faceid", "pulid"]


@pytest.mark.parametrize("value", ["instantid", "pulid,instantid", ","])
def test_an_unknown_adapter_is_refused_naming_the_option(value, capsys):
    from devtools.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--adapters", value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --adapters:" in error
    assert "give one or more of pulid, faceid" in error
    if "instantid" in value:
        assert "instantid is not an identity adapter" in error


def _references(tmp_path: Path, *paths: Path) -> Path:
    # The tiny colour-blob detector sees faces in Collins' and Obama's photos (not in Grace Hopper's, whose
    # flag it takes for a small face), so CI runs on them; on tiny weights the outputs are noise.
    references = tmp_path / "references"
    references.mkdir()
    for path in paths:
        shutil.copy(path, references / path.name)
    return references


class Unused:
    """A service component the run must not use: any attribute of it fails the test."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute):
        raise AssertionError(f"{self._name}.{attribute} was used")


@pytest.fixture
def loads(monkeypatch) -> list[tuple[str, list[bool]]]:
    """Each CharacterService.load of the run: its identity adapter, and whether every service loaded before
    it had been freed by then. With --magic-prompt Off no request calls the magic prompt's LLM, so each
    service gets a stand-in for it: its real load is half a minute per service on these CPUs."""
    from model.prompting.rewriter import PromptRewriter
    from model.service import CharacterService

    monkeypatch.setattr(PromptRewriter, "load", classmethod(lambda cls, *_, **__: Unused("magic prompt LLM")))

    original = CharacterService.load
    calls: list[tuple[str, list[bool]]] = []
    loaded: list[weakref.ref] = []

    def load(cls, weights_dir, options=None, max_steps=None):
        calls.append((options.identity_adapter, [ref() is None for ref in loaded]))
        service = original(weights_dir, options=options, max_steps=max_steps)
        loaded.append(weakref.ref(service))
        return service

    monkeypatch.setattr(CharacterService, "load", classmethod(load))
    return calls


# The run's options, but for the references, the adapters and the output folder: one prompt, Turbo, one style.
FAST = ("--max-prompts", "1", "--speeds", "Turbo", "--styles", "Realistic", "--magic-prompt", "Off")


@pytest.mark.slow
def test_tiny_end_to_end_compares_both_adapters(tiny_weights, tmp_path, capsys, loads):
    from devtools.evaluate import TINY_WARNING, main

    references = _references(tmp_path, PEOPLE["collins"][0], PEOPLE["obama"][0])
    out, tile = tmp_path / "out", 128
    main(
        [
            *("--weights-dir", str(tiny_weights), "--references", str(references), *FAST),
            *("--out", str(out), "--tile", str(tile)),
        ]
    )
    # One service per adapter, PuLID first, and the first freed before the second loads.
    assert loads == [("pulid", []), ("faceid", [True])]

    stdout = capsys.readouterr().out
    assert stdout.count(TINY_WARNING) == 2  # before the run and under the table
    assert "| adapter | speed | images | face sim. mean | face sim. median |" in stdout
    assert "| pulid | Turbo | 2 |" in stdout
    assert "| faceid | Turbo | 2 |" in stdout
    # The recogniser is named: buffalo_l's ArcFace, not the network PuLID conditions on.
    assert "insightface buffalo_l ArcFace (w600k_r50.onnx)" in stdout
    assert "PuLID v1.1 on antelopev2's glintr100 (a different network)" in stdout

    result = json.loads((out / "evaluation.json").read_text())
    assert result["profile"] == "tiny" and result["warning"] == TINY_WARNING
    assert result["adapters"] == ["pulid", "faceid"]
    assert "w600k_r50" in result["recogniser"]
    assert [(row["adapter"], row["speed"], row["images"]) for row in result["summary"]] == [
        ("pulid", "Turbo", 2),
        ("faceid", "Turbo", 2),
    ]
    samples = result["samples"]
    assert {(s["adapter"], s["reference"], s["prompt_index"]) for s in samples} == {
        (adapter, name, 0)
        for adapter in ("pulid", "faceid")
        for name in ("eileen_collins.jpg", "obama_portrait_2012.jpg")
    }
    for sample in samples:
        assert sample["image"].startswith(f"images/{sample['adapter']}/")
        assert Image.open(out / sample["image"]).size == (1024, 1024)
        assert -1.0 <= sample["clip_t"] <= 1.0
        assert sample["seconds"] > 0

    markdown = (out / "evaluation.md").read_text()
    assert TINY_WARNING in markdown and "w600k_r50" in markdown
    assert "| pulid | Turbo | 2 |" in markdown and "| faceid | Turbo | 2 |" in markdown

    # Two rows (references); the reference then the two adapters' outputs per row; a caption under each tile.
    with Image.open(out / "contact_sheet.png") as sheet:
        sheet.load()
        assert sheet.format == "PNG"
        assert sheet.size == (3 * tile, 2 * (tile + CAPTION_HEIGHT))


@pytest.mark.slow
def test_tiny_run_of_faceid_alone_loads_only_faceid(tiny_weights, tmp_path, capsys, loads):
    from devtools.evaluate import main

    references = _references(tmp_path, PEOPLE["collins"][0])
    out = tmp_path / "out"
    result = main(
        [
            *("--weights-dir", str(tiny_weights), "--references", str(references), *FAST),
            *("--adapters", "faceid", "--out", str(out), "--tile", "64"),
        ]
    )
    assert loads == [("faceid", [])]
    assert result["adapters"] == ["faceid"]
    assert [(row["adapter"], row["images"]) for row in result["summary"]] == [("faceid", 1)]
    assert [sample["adapter"] for sample in result["samples"]] == ["faceid"]
    stdout = capsys.readouterr().out
    assert "| faceid | Turbo | 1 |" in stdout and "| pulid |" not in stdout
    assert not (out / "images" / "pulid").exists()
