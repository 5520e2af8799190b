"""TRL-style rows from parquet and ``datasets`` folders (embedded image bytes), plain and conversational."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mmalign.data.vlm_rows import VLMPreferenceDataset, VLMRow
from mmalign.mllm.vlm.batch import VisionPreferenceCollator, render_row


def _png(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _hf_dataset():
    import datasets

    features = datasets.Features({
        "images": [datasets.Image()], "prompt": datasets.Value("string"),
        "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict({
        "images": [[{"bytes": _png((255, 0, 0)), "path": None}], [{"bytes": _png((0, 0, 255)), "path": None}]],
        "prompt": ["<image>What color?", "Which color is it?"],
        "chosen": ["red", "blue"], "rejected": ["green", "yellow"],
    }, features=features)


@pytest.mark.parametrize("fmt", ["save_to_disk", "parquet"])
def test_reads_embedded_images(fmt, tmp_path):
    ds = _hf_dataset()
    if fmt == "save_to_disk":
        ds.save_to_disk(str(tmp_path / "ds"))
        path = tmp_path / "ds"
    else:
        path = tmp_path / "train.parquet"
        ds.to_parquet(str(path))
    rows = VLMPreferenceDataset(path)
    assert len(rows) == 2
    row = rows[1]
    assert row.images[0].getpixel((0, 0)) == (0, 0, 255) and row.chosen == "blue"


def test_plain_rows_get_placeholders_and_eos(tiny_vlm):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm("llava"))
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    with_token = VLMRow("a", [image], "<image>What color?", "red", "green")
    without = VLMRow("b", [image], "Which color is it?", "blue", "yellow")
    assert render_row(processor, with_token) == ("<image>What color?", "red<|im_end|>", "green<|im_end|>")
    assert render_row(processor, without)[0] == "<image>Which color is it?"
    batch = VisionPreferenceCollator(processor)([with_token, without])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    ids = batch["pair"]["input_ids"]
    assert int((ids == image_id).sum()) == 4 * 4  # 4 rows x (28/14)^2 patches each
    eos = processor.tokenizer.eos_token_id
    last = batch["pair"]["completion_mask"].sum(1)  # every completion ends with EOS and is scored
    assert all(int(ids[i][batch["pair"]["completion_mask"][i].bool()][-1]) == eos for i in range(4)) and (last > 1).all()
