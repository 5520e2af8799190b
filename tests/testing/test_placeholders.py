"""``tiny:`` placeholders: one meaning for every family (a saved folder of the real classes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmalign.testing.placeholders import resolve_placeholders, tiny_model_folder


def test_a_video_placeholder_is_saved_once_and_the_config_points_at_it(tmp_path):
    cfg = SimpleNamespace(model=SimpleNamespace(pretrained="tiny:qwen2vl"), data=SimpleNamespace(path="rows.jsonl"))
    notes = resolve_placeholders(cfg, tmp_path)
    folder = tmp_path / "model_qwen2vl"
    assert cfg.model.pretrained == str(folder) and (folder / "config.json").is_file()
    assert cfg.data.path == "rows.jsonl" and "RANDOM-WEIGHT" in notes[0]
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert tiny_model_folder("qwen2vl", tmp_path) == folder and (folder / "config.json").stat().st_mtime_ns == stamp


def test_an_unknown_placeholder_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"tiny:sd14.*sd15.*qwen2vl"):
        tiny_model_folder("sd14", tmp_path)
    assert not any(tmp_path.iterdir())
