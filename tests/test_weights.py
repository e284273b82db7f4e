"""The weights manifest, check_weights() and the downloader, on small fake folders (no network)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from model.errors import WeightsError
from model.weights import checks, download
from model.weights.checks import check_evaluation_weights, check_weights
from model.weights.layout import PULID_FACE_DETECTOR_FILE, PULID_FACE_RECOGNIZER_FILE, WeightsLayout
from model.weights.manifest import (
    MANIFEST_NAME,
    PRODUCTION_MANIFEST,
    Manifest,
    ManifestFile,
    load_manifest,
    production_manifest,
    write_manifest,
)
from model.weights.stamp import STAMP_NAME

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    "sdxl/unet/weights.bin": os.urandom(4096),
    "vae/config.json": b'{"_class_name": "AutoencoderKL"}',
    "insightface/buffalo_l/det_10g.onnx": os.urandom(1000),
}
# A fixed past mtime: writes in a test then always move it, even on a coarse-grained filesystem clock.
OLD_NS = 1_600_000_000 * 10**9


def _write(root: Path, files: dict[str, bytes]) -> list[Path]:
    paths = []
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(OLD_NS, OLD_NS))
        paths.append(path)
    return paths


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[WeightsLayout, Manifest]:
    root = tmp_path / "w"
    manifest = write_manifest(root, "tiny", _write(root, FILES))
    return WeightsLayout(root), manifest


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = checks.sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(checks, "sha256_file", counting)
    return calls


def _flip_byte(path: Path, mtime_ns: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


# ---------------------------------------------------------------- check_weights on a tiny-profile folder


def test_write_manifest_lists_sizes_and_digests(tiny):
    layout, manifest = tiny
    assert manifest.profile == "tiny"
    assert {f.path: (f.size, f.sha256) for f in manifest.files} == {
        rel: (len(data), hashlib.sha256(data).hexdigest()) for rel, data in FILES.items()
    }
    assert load_manifest(layout.manifest) == manifest


def test_write_manifest_without_paths_lists_the_folder_but_not_its_bookkeeping(tiny):
    layout, manifest = tiny
    listed = write_manifest(layout.root, "tiny")
    assert sorted(listed.files, key=lambda f: f.path) == sorted(manifest.files, key=lambda f: f.path)


def test_check_passes_and_returns_the_manifest(tiny):
    layout, manifest = tiny
    assert check_weights(layout) == manifest


def test_missing_file_is_named_with_the_command(tiny):
    layout, _ = tiny
    (layout.root / "vae/config.json").unlink()
    with pytest.raises(WeightsError) as error:
        check_weights(layout)
    assert "vae/config.json: missing" in str(error.value)
    assert f"python scripts/make_tiny_weights.py {layout.root}" in str(error.value)


def test_truncated_file_fails_on_size(tiny, hash_calls):
    layout, _ = tiny
    path = layout.root / "sdxl/unet/weights.bin"
    path.write_bytes(FILES["sdxl/unet/weights.bin"][:100])
    with pytest.raises(WeightsError, match=r"sdxl/unet/weights\.bin: has 100 bytes, expected 4096"):
        check_weights(layout)
    assert hash_calls == []  # a wrong size needs no hashing


@pytest.mark.parametrize("with_stamp", [False, True], ids=["no-stamp", "after-stamp"])
def test_same_size_byte_flip_fails_on_digest(tiny, with_stamp):
    layout, _ = tiny
    if with_stamp:
        check_weights(layout)
    else:
        (layout.root / STAMP_NAME).unlink()
    _flip_byte(layout.root / "insightface/buffalo_l/det_10g.onnx", mtime_ns=OLD_NS + 10**9)
    with pytest.raises(WeightsError) as error:
        check_weights(layout)
    message = str(error.value)
    assert "insightface/buffalo_l/det_10g.onnx: corrupt" in message
    assert f"delete it and re-run `python scripts/make_tiny_weights.py {layout.root}`" in message
    # The failure is not written to the stamp: the next start says the same.
    with pytest.raises(WeightsError, match="corrupt"):
        check_weights(layout)


def test_stamp_spares_rehashing_unchanged_files(tiny, hash_calls):
    layout, _ = tiny
    check_weights(layout)  # write_manifest seeded the stamp: nothing to hash
    check_weights(layout)
    assert hash_calls == []
    touched = layout.root / "vae/config.json"
    os.utime(touched, ns=(OLD_NS + 5, OLD_NS + 5))
    check_weights(layout)
    assert hash_calls == [touched]
    (layout.root / STAMP_NAME).unlink()
    check_weights(layout)
    assert len(hash_calls) == 1 + len(FILES)
    check_weights(layout)
    assert len(hash_calls) == 1 + len(FILES)


def test_unreadable_stamp_only_costs_a_rehash(tiny, hash_calls):
    layout, manifest = tiny
    (layout.root / STAMP_NAME).write_text("{not json")
    assert check_weights(layout) == manifest
    assert len(hash_calls) == len(FILES)


def test_folder_without_manifest_names_both_commands(tmp_path):
    with pytest.raises(WeightsError) as error:
        check_weights(WeightsLayout(tmp_path))
    message = str(error.value)
    assert "has no weights" in message
    assert f"python scripts/download_weights.py --weights-dir {tmp_path}" in message
    assert f"python scripts/make_tiny_weights.py {tmp_path}" in message


def test_entry_without_sha256_is_checked_by_size_and_its_digest_recorded(tmp_path, caplog, hash_calls):
    root = tmp_path / "w"
    data = FILES["vae/config.json"]
    _write(root, {"vae/config.json": data})
    (root / MANIFEST_NAME).write_text(
        json.dumps(
            {"profile": "tiny", "files": [{"path": "vae/config.json", "size": len(data), "sha256": None}]}
        )
    )
    caplog.set_level(logging.INFO, logger="model.weights.checks")
    check_weights(WeightsLayout(root))
    digest = hashlib.sha256(data).hexdigest()
    assert f"no pinned sha256 in the manifest: checked by size only; its sha256 is {digest}" in caplog.text
    stamp = json.loads((root / STAMP_NAME).read_text())
    assert stamp["files"]["vae/config.json"]["sha256"] == digest
    check_weights(WeightsLayout(root))
    assert len(hash_calls) == 1


@pytest.mark.parametrize(
    "bad_path", ["../outside.bin", "/abs.bin", "a/../b.bin", "a\\b.bin", "manifest.json", ".verified.json"]
)
def test_manifest_paths_must_stay_inside_the_folder(tmp_path, bad_path):
    (tmp_path / MANIFEST_NAME).write_text(
        json.dumps({"profile": "tiny", "files": [{"path": bad_path, "size": 1, "sha256": None}]})
    )
    with pytest.raises(WeightsError, match="Invalid weights manifest"):
        check_weights(WeightsLayout(tmp_path))


# ---------------------------------------------------------------- the production manifest


def test_production_folder_manifest_must_equal_the_packages(tmp_path):
    data = json.loads(PRODUCTION_MANIFEST.read_text())
    data["files"][0]["size"] += 1
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(WeightsError) as error:
        check_weights(WeightsLayout(tmp_path))
    assert "other files than this version's production manifest" in str(error.value)
    assert f"python scripts/download_weights.py --weights-dir {tmp_path}" in str(error.value)


def test_production_folder_with_the_packages_manifest_reports_missing_files(tmp_path):
    (tmp_path / MANIFEST_NAME).write_bytes(PRODUCTION_MANIFEST.read_bytes())
    with pytest.raises(WeightsError) as error:
        check_weights(WeightsLayout(tmp_path))
    message = str(error.value)
    assert "ip_adapter/ip-adapter-faceid-plusv2_sdxl.bin: missing" in message
    assert f"python scripts/download_weights.py --weights-dir {tmp_path}" in message


def test_production_manifest_is_complete_and_inside_the_layout(tmp_path):
    manifest = production_manifest()
    assert manifest.profile == "production"
    paths = [f.path for f in manifest.files]
    assert len(paths) == len(set(paths))
    layout = WeightsLayout(tmp_path)
    homes = [
        layout.sdxl,
        layout.vae,
        layout.image_encoder,
        layout.faceid_adapter,
        layout.appearance_adapter,
        layout.face_analysis,
        layout.pulid_face_analysis,
        layout.pulid,
        layout.turbo_lora,
        layout.prompt_model,
        layout.evaluation_clip,
        layout.safety_checker,
    ]
    for entry in manifest.files:
        target = tmp_path / entry.path
        assert any(target == home or home in target.parents for home in homes), entry.path
        assert entry.repo and entry.file and entry.licence and entry.licence_url.startswith("https://")
        assert isinstance(entry.commercial_use, bool)
    # Every file the pipeline's loaders open is listed.
    for required in [
        layout.sdxl / "model_index.json",
        layout.sdxl / "unet/diffusion_pytorch_model.fp16.safetensors",
        layout.sdxl / "text_encoder/model.fp16.safetensors",
        layout.sdxl / "text_encoder_2/model.fp16.safetensors",
        layout.sdxl / "tokenizer_2/special_tokens_map.json",
        layout.vae / "config.json",
        layout.vae / "diffusion_pytorch_model.safetensors",
        layout.image_encoder / "config.json",
        layout.image_encoder / "model.safetensors",
        layout.faceid_adapter,
        layout.appearance_adapter,
        layout.turbo_lora_file,
        layout.face_analysis / "det_10g.onnx",
        layout.face_analysis / "w600k_r50.onnx",
        layout.pulid_adapter,
        layout.eva_clip,
        layout.face_parsing,
        layout.pulid_face_analysis / PULID_FACE_DETECTOR_FILE,
        layout.pulid_face_analysis / PULID_FACE_RECOGNIZER_FILE,
        layout.prompt_model / "config.json",
        layout.prompt_model / "model.safetensors",
        layout.prompt_model / "tokenizer.json",
        layout.safety_checker / "config.json",
        layout.safety_checker / "model.fp16.safetensors",
        layout.safety_checker / "preprocessor_config.json",
    ]:
        assert required.relative_to(tmp_path).as_posix() in paths


def test_production_manifest_non_commercial_entries():
    non_commercial = {f.path for f in production_manifest().files if not f.commercial_use}
    assert non_commercial == {
        "ip_adapter/ip-adapter-faceid-plusv2_sdxl.bin",
        "insightface/buffalo_l/det_10g.onnx",
        "insightface/buffalo_l/w600k_r50.onnx",
        "insightface/antelopev2/scrfd_10g_bnkps.onnx",
        "insightface/antelopev2/glintr100.onnx",
        # facexlib's code is MIT, but its parsing weights were trained on CelebAMask-HQ (non-commercial).
        "pulid/parsing_bisenet.pth",
    }


def test_antelopev2_detector_is_the_same_file_as_buffalo_l_s():
    # SCRFD-10G ships in both insightface packs under two names: one download each, the same bytes.
    by_path = {f.path: f for f in production_manifest().files}
    antelopev2 = by_path["insightface/antelopev2/" + PULID_FACE_DETECTOR_FILE]
    buffalo_l = by_path["insightface/buffalo_l/det_10g.onnx"]
    assert (antelopev2.size, antelopev2.sha256) == (buffalo_l.size, buffalo_l.sha256)


def test_production_manifest_pins_what_it_can():
    # Values are filled from cited public sources only; an unknown one is null, never guessed.
    for entry in production_manifest().files:
        assert entry.revision is None or re.fullmatch(r"[0-9a-f]{40}", entry.revision)
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)


# ---------------------------------------------------------------- the downloader, with a fake Hub


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "download_weights_script", ROOT / "scripts/download_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


HUB = {
    ("org/base", "unet/weights.bin"): os.urandom(3000),
    ("org/base", "model_index.json"): b'{"_class_name": "StableDiffusionXLPipeline"}',
    ("org/faces", "models/buffalo_l/det_10g.onnx"): os.urandom(2000),
    ("org/clip", "model.safetensors"): os.urandom(1500),
}


def _entry(path: str, repo: str, file: str, *, pinned: bool = True) -> ManifestFile:
    data = HUB[(repo, file)]
    return ManifestFile(
        path=path,
        size=len(data) if pinned else None,
        sha256=hashlib.sha256(data).hexdigest() if pinned else None,
        repo=repo,
        revision="a" * 40,
        file=file,
        licence="MIT",
        licence_url="https://example.org/licence",
        commercial_use=True,
    )


FAKE_PRODUCTION = Manifest(
    profile="production",
    files=(
        _entry("sdxl/unet/weights.bin", "org/base", "unet/weights.bin"),
        _entry("sdxl/model_index.json", "org/base", "model_index.json"),
        _entry("insightface/buffalo_l/det_10g.onnx", "org/faces", "models/buffalo_l/det_10g.onnx"),
    ),
)


class FakeHub:
    """Stands in for hf_hub_download: writes the file into local_dir, or breaks halfway when told to."""

    def __init__(self, fail: dict[str, BaseException] | None = None, serve: dict | None = None):
        self.fail = fail or {}
        self.serve = serve or HUB
        self.calls: list[tuple[str, str, str | None]] = []

    def __call__(self, *, repo_id, filename, revision=None, local_dir=None, token=None, **_):
        self.calls.append((repo_id, filename, revision))
        data = self.serve[(repo_id, filename)]
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if filename in self.fail:
            target.write_bytes(data[: len(data) // 2])  # a partial file, as a broken transfer leaves
            raise self.fail[filename]
        target.write_bytes(data)
        return str(target)


@pytest.fixture
def fake_production(monkeypatch):
    monkeypatch.setattr(download, "production_manifest", lambda: FAKE_PRODUCTION)
    monkeypatch.setattr(checks, "production_manifest", lambda: FAKE_PRODUCTION)
    return FAKE_PRODUCTION


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".download-"))


def test_download_fetches_verifies_and_writes_the_folder_manifest(
    tmp_path, monkeypatch, script, fake_production, capsys
):
    hub = FakeHub()
    monkeypatch.setattr(download, "hf_hub_download", hub)
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root)]) == 0
    assert [call[2] for call in hub.calls] == ["a" * 40] * 3  # the pinned revision is what is fetched
    for entry in fake_production.files:
        assert (root / entry.path).read_bytes() == HUB[(entry.repo, entry.file)]
    assert load_manifest(root / MANIFEST_NAME) == fake_production
    assert _leftovers(root) == []
    assert check_weights(WeightsLayout(root)) == fake_production
    assert "All 3 files of the production weights are verified" in capsys.readouterr().out

    # Re-running downloads nothing and, thanks to the stamp, hashes nothing.
    calls = []
    monkeypatch.setattr(checks, "sha256_file", lambda path: calls.append(path))
    assert script.main(["--weights-dir", str(root)]) == 0
    assert len(hub.calls) == 3 and calls == []


def test_weights_dir_defaults_to_the_environment(tmp_path, monkeypatch, script, fake_production):
    monkeypatch.setattr(download, "hf_hub_download", FakeHub())
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "from-env"))
    assert script.main([]) == 0
    assert (tmp_path / "from-env" / MANIFEST_NAME).is_file()


def test_broken_transfer_leaves_no_partial_file_and_fails(
    tmp_path, monkeypatch, script, fake_production, capsys
):
    hub = FakeHub(fail={"unet/weights.bin": ConnectionError("connection reset by peer")})
    monkeypatch.setattr(download, "hf_hub_download", hub)
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root)]) == 1
    out = capsys.readouterr().out
    assert "sdxl/unet/weights.bin: download failed (ConnectionError: connection reset by peer)" in out
    assert f"python scripts/download_weights.py --weights-dir {root}" in out
    assert "https://huggingface.co/org/base/blob/" + "a" * 40 + "/unet/weights.bin" in out
    assert not (root / "sdxl/unet/weights.bin").exists()
    assert _leftovers(root) == []
    # The other files are in place; the folder is not marked complete.
    assert (root / "sdxl/model_index.json").is_file()
    assert not (root / MANIFEST_NAME).exists()
    with pytest.raises(WeightsError, match="has no weights"):
        check_weights(WeightsLayout(root))

    # The next run fetches only what is missing.
    hub.fail.clear()
    assert script.main(["--weights-dir", str(root)]) == 0
    assert [call[1] for call in hub.calls].count("model_index.json") == 1


def test_interrupt_removes_the_partial_download(tmp_path, monkeypatch, script, fake_production, capsys):
    monkeypatch.setattr(download, "hf_hub_download", FakeHub(fail={"model_index.json": KeyboardInterrupt()}))
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root)]) == 130
    assert "Interrupted" in capsys.readouterr().out
    assert not (root / "sdxl/model_index.json").exists()
    assert _leftovers(root) == []


def test_wrong_bytes_from_the_hub_are_rejected(tmp_path, monkeypatch, script, fake_production, capsys):
    tampered = dict(HUB)
    data = bytearray(HUB[("org/faces", "models/buffalo_l/det_10g.onnx")])
    data[0] ^= 0xFF
    tampered[("org/faces", "models/buffalo_l/det_10g.onnx")] = bytes(data)
    monkeypatch.setattr(download, "hf_hub_download", FakeHub(serve=tampered))
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root)]) == 1
    assert (
        "insightface/buffalo_l/det_10g.onnx: download failed (DownloadError: sha256 is"
        in capsys.readouterr().out
    )
    assert not (root / "insightface/buffalo_l/det_10g.onnx").exists()
    assert _leftovers(root) == []


def test_corrupt_file_in_place_is_fetched_again(tmp_path, monkeypatch, script, fake_production):
    hub = FakeHub()
    monkeypatch.setattr(download, "hf_hub_download", hub)
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root)]) == 0
    _flip_byte(root / "sdxl/unet/weights.bin", mtime_ns=OLD_NS)
    assert script.main(["--weights-dir", str(root)]) == 0
    assert [call[1] for call in hub.calls].count("unet/weights.bin") == 2
    assert (root / "sdxl/unet/weights.bin").read_bytes() == HUB[("org/base", "unet/weights.bin")]


def test_stale_partial_download_of_a_killed_run_is_removed(tmp_path, monkeypatch, script, fake_production):
    monkeypatch.setattr(download, "hf_hub_download", FakeHub())
    root = tmp_path / "weights"
    (root / ".download-killed/sub").mkdir(parents=True)
    (root / ".download-killed/sub/half.bin").write_bytes(b"half")
    assert script.main(["--weights-dir", str(root)]) == 0
    assert _leftovers(root) == []


def test_check_only_downloads_nothing_and_reports(tmp_path, monkeypatch, script, fake_production, capsys):
    hub = FakeHub()
    monkeypatch.setattr(download, "hf_hub_download", hub)
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root), "--check-only"]) == 1
    out = capsys.readouterr().out
    assert hub.calls == [] and not root.exists()
    for entry in fake_production.files:
        assert f"{entry.path}: missing: run `python scripts/download_weights.py --weights-dir {root}`" in out
    assert script.main(["--weights-dir", str(root)]) == 0
    assert script.main(["--weights-dir", str(root), "--check-only"]) == 0


@pytest.mark.parametrize("hub_etag_matches", [True, False])
def test_unpinned_file_is_checked_against_the_hubs_digest(tmp_path, monkeypatch, hub_etag_matches):
    entry = _entry("sdxl/unet/weights.bin", "org/base", "unet/weights.bin", pinned=False)
    real = hashlib.sha256(HUB[("org/base", "unet/weights.bin")]).hexdigest()
    etag = real if hub_etag_matches else "0" * 64
    monkeypatch.setattr(download, "hf_hub_download", FakeHub())
    monkeypatch.setattr(
        download, "get_hf_file_metadata", lambda url, token=None: SimpleNamespace(etag=f'"{etag}"')
    )
    lines: list[str] = []
    root = tmp_path / "weights"
    code = download.run(root, Manifest("production", (entry,)), say=lines.append)
    out = "\n".join(lines)
    if hub_etag_matches:
        assert code == 0
        assert f'"sha256": "{real}"' in out  # printed for a maintainer to pin
    else:
        assert code == 1
        assert f"but the Hub states {'0' * 64}" in out
        assert not (root / entry.path).exists()


def test_unpinned_git_file_is_checked_against_its_blob_sha1(tmp_path, monkeypatch):
    entry = _entry("sdxl/model_index.json", "org/base", "model_index.json", pinned=False)
    data = HUB[("org/base", "model_index.json")]
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    monkeypatch.setattr(download, "hf_hub_download", FakeHub())
    monkeypatch.setattr(download, "get_hf_file_metadata", lambda url, token=None: SimpleNamespace(etag=blob))
    lines: list[str] = []
    assert download.run(tmp_path, Manifest("production", (entry,)), say=lines.append) == 0
    assert f"matches the Hub's git-sha1 {blob}" in "\n".join(lines)


# ---------------------------------------------------------------- evaluation-only files (scripts/evaluate.py)


def test_evaluation_files_are_not_needed_to_serve_but_checked_for_evaluation(tmp_path):
    root = tmp_path / "w"
    paths = _write(root, FILES)
    evaluation = _write(root, {"evaluation/clip/model.safetensors": os.urandom(500)})
    manifest = write_manifest(root, "tiny", paths + evaluation, evaluation_paths=evaluation)
    assert [f.path for f in manifest.evaluation_files] == ["evaluation/clip/model.safetensors"]
    layout = WeightsLayout(root)
    assert check_evaluation_weights(layout) == manifest
    evaluation[0].unlink()
    assert check_weights(layout) == manifest  # what setup() runs: the CLIP-T model is not required
    with pytest.raises(WeightsError) as error:
        check_evaluation_weights(layout)
    assert "evaluation/clip/model.safetensors: missing" in str(error.value)
    assert f"python scripts/make_tiny_weights.py {root}" in str(error.value)


def test_production_evaluation_files_are_the_clip_t_model(tmp_path):
    manifest = production_manifest()
    clip = WeightsLayout(tmp_path).evaluation_clip.relative_to(tmp_path).as_posix()
    assert {f.path for f in manifest.evaluation_files} >= {f"{clip}/config.json", f"{clip}/model.safetensors"}
    assert all(f.path.startswith(clip + "/") for f in manifest.evaluation_files)
    assert not any(f.path.startswith(clip + "/") for f in manifest.serving_files)


def test_downloader_fetches_evaluation_files_only_when_asked(tmp_path, monkeypatch, script, capsys):
    clip = _entry("evaluation/clip/model.safetensors", "org/clip", "model.safetensors")
    with_clip = Manifest("production", FAKE_PRODUCTION.files + (replace(clip, evaluation_only=True),))
    monkeypatch.setattr(download, "production_manifest", lambda: with_clip)
    monkeypatch.setattr(checks, "production_manifest", lambda: with_clip)
    hub = FakeHub()
    monkeypatch.setattr(download, "hf_hub_download", hub)
    root = tmp_path / "weights"
    assert script.main(["--weights-dir", str(root)]) == 0
    assert ("org/clip", "model.safetensors", "a" * 40) not in hub.calls
    assert "Skipping 1 evaluation-only file(s); add --with-evaluation" in capsys.readouterr().out
    assert check_weights(WeightsLayout(root)) == with_clip
    with pytest.raises(WeightsError, match="--with-evaluation"):
        check_evaluation_weights(WeightsLayout(root))

    assert script.main(["--weights-dir", str(root), "--with-evaluation"]) == 0
    assert hub.calls[-1] == ("org/clip", "model.safetensors", "a" * 40)
    assert (root / clip.path).read_bytes() == HUB[("org/clip", "model.safetensors")]
    assert check_evaluation_weights(WeightsLayout(root)) == with_clip
