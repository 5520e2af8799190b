"""Bad rows: clear errors naming file / row / field, or counted skips."""

from __future__ import annotations

import json

import pytest

from mmalign.data.errors import DataFormatError, TooManyBadSamplesError
from mmalign.data.skipping import SkipCounter
from mmalign.data.vlm_rows import VLMPreferenceDataset
from mmalign.mllm.vlm.batch import OverlongPromptError, VisionPreferenceCollator, render_row


def _edit(path, index, **changes):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[index].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_reads_rows_and_images(pairs_jsonl):
    ds = VLMPreferenceDataset(pairs_jsonl, extra_image_field="retrieved_image", require_extra_image=True)
    assert len(ds) == 4 and ds.skipped == []
    row = ds[2]
    assert row.id == "row2" and row.images[0].size == (48, 32) and row.extra_image.size == (32, 32)
    assert row.rewards == {"chosen_reward": 5.0, "rejected_reward": 1.0}


def test_missing_image_file_error_names_file_row_field(pairs_jsonl):
    _edit(pairs_jsonl, 1, images=["nope.png"])
    with pytest.raises(DataFormatError) as err:
        VLMPreferenceDataset(pairs_jsonl)
    msg = str(err.value)
    assert str(pairs_jsonl) in msg and "line 2" in msg and "'images'" in msg and "nope.png" in msg


def test_missing_image_file_skipped_and_counted(pairs_jsonl):
    _edit(pairs_jsonl, 1, images=["nope.png"])
    ds = VLMPreferenceDataset(pairs_jsonl, on_bad_row="skip")
    assert len(ds) == 3 and len(ds.skipped) == 1 and "nope.png" in ds.skipped[0]


def test_missing_retrieved_image_for_rdpo(pairs_jsonl):
    _edit(pairs_jsonl, 3, retrieved_image=None)
    with pytest.raises(DataFormatError, match=r"line 4, field 'retrieved_image'"):
        VLMPreferenceDataset(pairs_jsonl, extra_image_field="retrieved_image", require_extra_image=True)


@pytest.mark.parametrize("field,value", [("chosen", [{"role": "assistant", "content": "  "}]), ("rejected", "")])
def test_empty_completion_error_names_field(pairs_jsonl, field, value):
    _edit(pairs_jsonl, 2, **{field: value})
    with pytest.raises(DataFormatError, match=rf"line 3, field '{field}': empty completion"):
        VLMPreferenceDataset(pairs_jsonl)
    assert len(VLMPreferenceDataset(pairs_jsonl, on_bad_row="skip")) == 3


def test_unreadable_image_is_a_counted_skip(pairs_jsonl, tiny_vlm):
    from transformers import AutoProcessor

    (pairs_jsonl.parent / "img0.png").write_bytes(b"definitely not a png")
    ds = VLMPreferenceDataset(pairs_jsonl)
    bad = ds[0]
    assert bad.field == "images" and "cannot decode" in bad.reason and bad.id == "row0"
    collate = VisionPreferenceCollator(AutoProcessor.from_pretrained(tiny_vlm("llava")))
    batch = collate([ds[0], ds[1]])
    assert batch["row_ids"] == ["row1"] and batch["n_bad"] == 1 and batch["pair"]["input_ids"].shape[0] == 2
    counter = SkipCounter(total=4, max_bad_fraction=0.3)
    counter.update(batch)
    assert counter.as_dict()["bad_samples"] == 1
    with pytest.raises(TooManyBadSamplesError, match="line 1"):
        SkipCounter(total=4, max_bad_fraction=0.1).update(batch)


def test_prompt_longer_than_max_length(pairs_jsonl, tiny_vlm):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm("qwen2vl"))
    ds = VLMPreferenceDataset(pairs_jsonl)
    rows = [ds[0], ds[3]]  # img3 is 56x32 → more visual tokens than img0 (32x32)
    _, lengths = VisionPreferenceCollator(processor)._build(rows, [render_row(processor, r) for r in rows], None)
    assert lengths[1] > lengths[0]
    limit = lengths[1]  # row0 fits (with its completion cut), row3 leaves no room for a completion token
    with pytest.raises(OverlongPromptError, match="row row3.*visual tokens are never truncated"):
        VisionPreferenceCollator(processor, max_length=limit)(rows)
    batch = VisionPreferenceCollator(processor, max_length=limit, on_overlong="drop")(rows)
    assert batch["row_ids"] == ["row0"] and batch["n_overlong"] == 1
    ids = batch["pair"]["input_ids"]
    assert ids.shape[1] == limit  # completions cut at the end, all visual tokens kept
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((ids[0] == image_id).sum()) == int(batch["vision"]["image_grid_thw"].prod(-1).sum()) // 4
    assert batch["pair"]["completion_mask"].sum(1).tolist() == [limit - lengths[0]] * 2
