"""Prompt sets: the shipped PartiPrompts and toy captions, .txt / .jsonl / .tsv files, an HPDv2 folder, bad files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mmalign.evaluation.prompts import load_prompt_set


def test_parti_is_shipped_whole_with_categories_and_literal_quotes():
    parti = load_prompt_set("parti")
    assert len(parti) == 1632
    counts = Counter(parti.categories)
    assert len(counts) == 12 and counts["Animals"] == 314 and counts["World Knowledge"] == 214
    assert parti.prompts[0] == "bond"
    assert any(p.startswith('"G I G G L E" painted') for p in parti.prompts)  # not eaten by CSV quoting
    challenge = load_prompt_set("parti", category_key="Challenge")
    assert Counter(challenge.categories)["Fine-grained Detail"] == 312


def test_toy_sets():
    heldout = load_prompt_set("toy-heldout")
    assert len(heldout) == 108 and set(heldout.categories) == {"circle", "square", "triangle"}
    assert len(load_prompt_set("toy-all")) == 180
    assert load_prompt_set("toy-all").head(5).prompts == load_prompt_set("toy-all").prompts[:5]


def test_txt_jsonl_tsv(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n  a dog  \n")
    assert load_prompt_set(str(txt)).prompts == ["a cat", "a dog"]
    assert load_prompt_set(str(txt)).categories is None
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat", "category": "animal"}\n\n{"caption": "a car", "category": "vehicle"}\n')
    got = load_prompt_set(str(jsonl))
    assert got.prompts == ["a cat", "a car"] and got.categories == ["animal", "vehicle"]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("Prompt\tCategory\na cat\tanimal\na car\tvehicle\n")
    assert load_prompt_set(str(tsv)).categories == ["animal", "vehicle"]


def test_hpdv2_benchmark_folder(tmp_path):
    for style in ("anime", "concept-art", "paintings", "photo"):
        (tmp_path / f"{style}.json").write_text(json.dumps([f"{style} prompt {i}" for i in range(3)]))
    got = load_prompt_set(str(tmp_path))
    assert len(got) == 12 and got.categories[:3] == ["anime"] * 3 and got.categories[-1] == "photo"


@pytest.mark.parametrize("content, suffix, match", [
    ("\n  \n", ".txt", r"p.txt: no prompts"),
    ('{"prompt": "ok"}\n{"text": "no prompt key"}\n', ".jsonl", r"p.jsonl, line 2: field 'prompt' missing"),
    ('{"prompt": "ok"}\nnot json\n', ".jsonl", r"p.jsonl, line 2: not JSON"),
    ("Text\tCategory\nx\ty\n", ".tsv", r"no 'Prompt' column"),
    ("a\n", ".md", r"unknown format '.md'"),
])
def test_bad_files_name_file_and_line(tmp_path, content, suffix, match):
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_prompt_set(str(path))


def test_missing_file_and_incomplete_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file, and not a shipped set"):
        load_prompt_set(str(tmp_path / "nope.txt"))
    with pytest.raises(ValueError, match="HPDv2 benchmark files"):
        load_prompt_set(str(tmp_path))
