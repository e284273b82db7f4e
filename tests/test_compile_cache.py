"""Where torch.compile's cache goes (model/generation/compilation.py's use_compile_cache): the weights
folder, an operator's folder, or, when the weights folder cannot be written, a temporary one."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from model.generation.compilation import CACHE_FOLDER, use_compile_cache
from model.options import INDUCTOR_CACHE_ENV, TRITON_CACHE_ENV


@pytest.fixture
def environment(monkeypatch):
    """The two cache variables unset for the test, and restored after it."""
    for name in (INDUCTOR_CACHE_ENV, TRITON_CACHE_ENV):
        monkeypatch.setenv(name, "unused")
        monkeypatch.delenv(name)
    return os.environ


def test_the_cache_is_in_the_weights_folder_per_torch_version(tmp_path, environment):
    folder = use_compile_cache(tmp_path)
    expected = tmp_path / CACHE_FOLDER / f"torch-{torch.__version__}"
    assert folder == expected / "inductor"
    assert environment[INDUCTOR_CACHE_ENV] == str(expected / "inductor")
    assert environment[TRITON_CACHE_ENV] == str(expected / "triton")


def test_an_operators_folder_wins_and_nothing_is_set(tmp_path, environment):
    assert use_compile_cache(tmp_path / "weights", tmp_path / "mine") == tmp_path / "mine"
    assert INDUCTOR_CACHE_ENV not in environment and not (tmp_path / "weights").exists()


def test_a_weights_folder_that_cannot_be_written_falls_back_with_a_warning(tmp_path, environment, caplog):
    # A file where the folder should be: mkdir fails as on a read-only volume (root ignores permissions).
    weights = tmp_path / "weights"
    weights.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="model.generation.compilation"):
        folder = use_compile_cache(weights)
    assert not folder.is_relative_to(weights) and folder.parent.is_dir()
    assert environment[INDUCTOR_CACHE_ENV] == str(folder)
    assert "the weights folder is not writable" in caplog.text and "a restart loses" in caplog.text
