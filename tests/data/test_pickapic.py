"""Pick-a-Pic v2 schema: round trip through the writer, tie removal, label ordering, filters, dual captions."""

import datasets
import pytest

from mmalign.data import load_preference_data, write_pickapic_parquet


def pixel(image):
    return image.getpixel((5, 5))


def test_round_trip_ties_removed_and_label_order(tmp_path, pickapic_rows, solid):
    write_pickapic_parquet(pickapic_rows, tmp_path / "train-00000-of-00001.parquet")
    ds = load_preference_data(tmp_path)
    assert len(ds) == 5
    assert ds.summary()["dropped_tie"] == 1 and ds.summary()["rows_read"] == 6
    prompts = [ds[i]["prompt"] for i in range(len(ds))]
    assert prompts == ["prompt 0", "prompt 1", "prompt 3", "prompt 4", "prompt 5"]
    for i, k in enumerate([0, 1, 3, 4, 5]):
        item = ds[i]
        label = pickapic_rows[k]["label_0"]
        winner, loser = (2 * k, 2 * k + 1) if label == 1 else (2 * k + 1, 2 * k)
        assert item["chosen"].mode == "RGB" and item["chosen"].size == (32, 32)
        assert pixel(item["chosen"]) == pixel(solid(winner)) and pixel(item["rejected"]) == pixel(solid(loser))
        assert item["chosen"].tobytes() == solid(winner).tobytes()  # PNG: lossless
        assert len(item["chosen_key"]) == 40 and item["chosen_key"] != item["rejected_key"]
        assert item["id"].endswith(f":{k}")
        assert "prompt_chosen" not in item


def test_keys_are_content_hashes(tmp_path, pickapic_rows, solid):
    """The same image bytes get the same key wherever they appear (the latent cache relies on it)."""
    rows = [dict(pickapic_rows[0]), dict(pickapic_rows[0], caption="other", label_0=0)]
    write_pickapic_parquet(rows, tmp_path / "a.parquet")
    ds = load_preference_data(tmp_path / "a.parquet")
    assert ds[0]["chosen_key"] == ds[1]["rejected_key"]
    assert ds[0]["rejected_key"] == ds[1]["chosen_key"]


def test_has_label_and_are_different_honoured(tmp_path, pickapic_rows, solid):
    rows = [dict(r, has_label=True, are_different=True) for r in pickapic_rows]
    rows[0]["has_label"] = False
    rows[1]["are_different"] = False
    write_pickapic_parquet(rows, tmp_path / "a.parquet")
    ds = load_preference_data(tmp_path / "a.parquet")
    s = ds.summary()
    assert (len(ds), s["dropped_no_label"], s["dropped_not_different"], s["dropped_tie"]) == (3, 1, 1, 1)
    kept = load_preference_data(tmp_path / "a.parquet", honour_has_label=False, honour_are_different=False)
    assert len(kept) == 5


def test_dual_captions_swap_with_images(tmp_path, pickapic_rows, solid):
    rows = [dict(r, caption_0=f"cap of {2 * k}", caption_1=f"cap of {2 * k + 1}") for k, r in enumerate(pickapic_rows)]
    write_pickapic_parquet(rows, tmp_path / "dual.parquet")
    ds = load_preference_data(tmp_path / "dual.parquet")
    assert ds.is_dual
    item = ds[1]  # row 1: label_0 == 0 → jpg_1 chosen
    assert item["prompt"] == "prompt 1"
    assert (item["prompt_chosen"], item["prompt_rejected"]) == ("cap of 3", "cap of 2")
    assert pixel(item["chosen"]) == pixel(solid(3))
    item = ds[0]
    assert (item["prompt_chosen"], item["prompt_rejected"]) == ("cap of 0", "cap of 1")


def test_save_to_disk_folder_and_splits(tmp_path, pickapic_rows, solid):
    write_pickapic_parquet(pickapic_rows, tmp_path / "src.parquet")
    hf = datasets.Dataset.from_parquet(str(tmp_path / "src.parquet"), cache_dir=str(tmp_path / "cache"))
    datasets.DatasetDict({"train": hf, "validation": hf.select(range(2))}).save_to_disk(tmp_path / "dd")
    assert len(load_preference_data(tmp_path / "dd")) == 5
    assert len(load_preference_data(tmp_path / "dd", split="validation")) == 2
    item = load_preference_data(tmp_path / "dd")[1]
    assert pixel(item["chosen"]) == pixel(solid(3))


def test_parquet_folder_split_selection(tmp_path, pickapic_rows, solid):
    write_pickapic_parquet(pickapic_rows, tmp_path / "data" / "train-00000-of-00002.parquet")
    write_pickapic_parquet(pickapic_rows[:2], tmp_path / "data" / "train-00001-of-00002.parquet")
    write_pickapic_parquet(pickapic_rows[:1], tmp_path / "data" / "validation-00000-of-00001.parquet")
    assert len(load_preference_data(tmp_path)) == 7
    assert len(load_preference_data(tmp_path, split="validation")) == 1
    with pytest.raises(Exception, match="split 'test'"):
        load_preference_data(tmp_path, split="test")
