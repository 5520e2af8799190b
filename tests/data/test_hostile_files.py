"""Hostile data files (issue 28): a byte-order mark at the start of a csv / jsonl file (Excel's "CSV UTF-8",
Notepad) is not part of the first column name or row (the csv's first column became '\\ufefffile_path' and the
file was refused); a NUL character in an image path is an error naming file, line and field."""

from __future__ import annotations

import json

from PIL import Image

from mmalign.data import load_preference_data


def test_csv_and_jsonl_with_a_bom_load_as_without(tmp_path):
    (tmp_path / "imgs").mkdir()
    for k, color in enumerate(("red", "blue")):
        Image.new("RGB", (64, 64), color).save(tmp_path / "imgs" / f"{k}.png")
    text = "file_path,caption,label\nimgs/0.png,a red one,1\nimgs/1.png,a blue one,0\n"
    (tmp_path / "plain.csv").write_text(text, encoding="utf-8")
    (tmp_path / "bom.csv").write_text(text, encoding="utf-8-sig")
    plain, bom = (load_preference_data(tmp_path / n, "unpaired") for n in ("plain.csv", "bom.csv"))
    assert len(bom) == len(plain) == 2
    assert [bom[i]["prompt"] for i in range(2)] == [plain[i]["prompt"] for i in range(2)] == ["a red one", "a blue one"]
    assert [bom[i]["label"] for i in range(2)] == [True, False]

    rows = [{"prompt": "a red one", "chosen": "imgs/0.png", "rejected": "imgs/1.png"}]
    (tmp_path / "bom.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8-sig")
    pairs = load_preference_data(tmp_path / "bom.jsonl")
    assert len(pairs) == 1 and pairs[0]["prompt"] == "a red one"


def test_a_nul_character_in_an_image_path_names_file_line_and_field(tmp_path):
    """Before: ``ValueError: embedded null byte`` from ``os.path.realpath`` with a traceback (issue 28)."""
    import pytest

    from mmalign.data.errors import DataFormatError

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "imgs" / "0.png")
    rows = [{"prompt": "a", "chosen": "imgs/0.png", "rejected": "imgs/0.png"},
            {"prompt": "b", "chosen": "imgs/0.png", "rejected": "imgs/\0.png"}]
    (tmp_path / "nul.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFormatError, match=r"nul.jsonl, line 2, field 'rejected'.*contains a NUL character"):
        load_preference_data(tmp_path / "nul.jsonl")
