"""Data kind ``prompts`` (mmalign/data/prompts.py): formats, the train/test split, errors naming file and line."""

from __future__ import annotations

import json

import pytest

from mmalign.data.errors import DataFormatError
from mmalign.data.prompts import load_prompts


def test_txt_skips_blank_and_comment_lines_and_splits_off_the_tail(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# header\na cat\n\n  a dog  \na fox\na owl\n")
    assert load_prompts(path).prompts == ["a cat", "a dog", "a fox", "a owl"]
    assert load_prompts(path, "train", 0.25).prompts == ["a cat", "a dog", "a fox"]
    assert load_prompts(path, "test", 0.25).prompts == ["a owl"]
    assert load_prompts(path, "test", 0.1).prompts == ["a owl"]  # at least one held out
    assert load_prompts(path, max_items=2).prompts == ["a cat", "a dog"]
    assert load_prompts(path).sources[1] == f"{path}, line 4"


def test_jsonl_keeps_metadata(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a cat", "tag": "animal"}) + "\n\n" + json.dumps({"prompt": "a car"}) + "\n")
    data = load_prompts(path)
    assert data.prompts == ["a cat", "a car"] and data.metadata == [{"tag": "animal"}, {}]


def test_folder_with_train_and_test_files(tmp_path):
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "test.txt").write_text("c\n")
    assert load_prompts(tmp_path).prompts == ["a", "b"]
    assert load_prompts(tmp_path, "test").prompts == ["c"]


@pytest.mark.parametrize("text, message", [
    ('{"prompt": "a"}\n{"prompt": ""}\n', "line 2, field 'prompt'"),
    ('{"prompt": "a"}\n{"text": "b"}\n', "line 2, field 'prompt': a non-empty string expected \\(missing\\)"),
    ('{"prompt": "a"}\n\n{"prompt": \n', "line 3: not valid JSON"),
    ('["a"]\n', "line 1: a JSON object"),
    ('{"prompt": 3}\n', "line 1, field 'prompt'"),
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message) as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataFormatError, match="no prompts"):
        load_prompts(tmp_path / "empty.txt")
    with pytest.raises(DataFormatError, match="no such prompt file"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "p.csv").write_text("a\n")
    with pytest.raises(DataFormatError, match=r"\.txt .* or \.jsonl"):
        load_prompts(tmp_path / "p.csv")
    (tmp_path / "one.txt").write_text("a\n")
    with pytest.raises(DataFormatError, match="none for training"):
        load_prompts(tmp_path / "one.txt", "train", 0.5)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DataFormatError, match="train.txt or train.jsonl"):
        load_prompts(folder)
