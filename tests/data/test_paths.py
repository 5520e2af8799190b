"""Image paths in data rows stay inside the data set's folder unless data.allow_outside_paths; only bounded regular
files are read, so a FIFO cannot hang a run and /dev/zero cannot fill its memory (issue 18)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmalign.data import load_preference_data
from mmalign.data.errors import BadSample, DataFormatError
from mmalign.data.paths import DataPathError, read_regular_file


def _data_set(root: Path, solid, rejected: str) -> Path:
    """``root/data/pairs.jsonl`` with two rows; the second row's rejected image is ``rejected``."""
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        solid(i).save(folder / f"{i}.png")
    solid(5).save(root / "outside.png")
    rows = [{"prompt": "a", "chosen": "0.png", "rejected": "1.png"},
            {"prompt": "b", "chosen": "2.png", "rejected": rejected}]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _link_out(root: Path) -> str:
    (root / "data").mkdir(parents=True, exist_ok=True)
    os.symlink(root / "outside.png", root / "data" / "link.png")
    return "link.png"


@pytest.mark.parametrize(("kind", "make_ref"), [
    ("an absolute path", lambda root: str(root / "outside.png")),
    ("a '..' path", lambda root: "../outside.png"),
    ("a symlink", _link_out),
])
def test_paths_out_of_the_data_folder_are_errors_naming_the_line(tmp_path, solid, kind, make_ref):
    ref = make_ref(tmp_path)
    path = _data_set(tmp_path, solid, ref)
    with pytest.raises(DataFormatError) as info:
        load_preference_data(path)
    message = str(info.value)
    assert "line 2, field 'rejected'" in message, message
    assert f"is {kind} outside the data set's folder" in message and "data.allow_outside_paths: true" in message
    dataset = load_preference_data(path, allow_outside_paths=True)
    assert not isinstance(dataset.read(1), BadSample)


def test_a_fifo_or_a_device_is_a_counted_bad_sample_not_a_hang(tmp_path, solid):
    path = _data_set(tmp_path, solid, "fifo.png")
    os.mkfifo(tmp_path / "data" / "fifo.png")  # nobody ever writes to it: a plain open() would block forever
    bad = load_preference_data(path).read(1)
    assert isinstance(bad, BadSample) and "is not a regular file (a FIFO)" in bad.describe()

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["rejected"] = "/dev/zero"  # would grow memory until the OOM killer
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = load_preference_data(path, allow_outside_paths=True).read(1)
    assert isinstance(bad, BadSample) and "(a character device)" in bad.describe()


def test_files_over_the_size_cap_are_refused(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 1000)
    assert read_regular_file(big, max_bytes=1000) == b"\0" * 1000
    with pytest.raises(DataPathError, match="1000 bytes, more than the limit of 999"):
        read_regular_file(big, max_bytes=999)


def test_vlm_rows_outside_the_image_root_are_bad_rows(tmp_path, solid):
    from mmalign.data.vlm_rows import VLMPreferenceDataset

    (tmp_path / "data").mkdir()
    solid(0).save(tmp_path / "outside.png")
    solid(1).save(tmp_path / "data" / "inside.png")
    rows = [{"images": ["inside.png"], "prompt": "q", "chosen": "a", "rejected": "b"},
            {"images": [str(tmp_path / "outside.png")], "prompt": "q", "chosen": "a", "rejected": "b"}]
    path = tmp_path / "data" / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFormatError, match="line 2, field 'images'.*absolute path outside"):
        VLMPreferenceDataset(path)
    skipping = VLMPreferenceDataset(path, on_bad_row="skip")
    assert len(skipping) == 1 and "outside the data set's folder" in skipping.skipped[0]
    assert len(VLMPreferenceDataset(path, allow_outside_paths=True)) == 2


@pytest.mark.parametrize(("label_1", "ok"), [(0, True), (1, False), (0.5, False), (None, True)])
def test_label_1_must_agree_with_label_0(tmp_path, solid, label_1, ok):
    for i in range(2):
        solid(i).save(tmp_path / f"{i}.png")
    row = {"caption": "a", "jpg_0": "0.png", "jpg_1": "1.png", "label_0": 1}
    if label_1 is not None:
        row["label_1"] = label_1
    path = tmp_path / "pickapic.jsonl"
    path.write_text(json.dumps(row) + "\n")
    if ok:
        assert len(load_preference_data(path)) == 1
    else:
        with pytest.raises(DataFormatError, match="line 1, field 'label_1': label_1 must be 1 - label_0 = 0"):
            load_preference_data(path)
