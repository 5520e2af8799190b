"""Bad input: structural problems → DataFormatError naming file/row/field; image problems → counted skips."""

import functools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from mmalign.data import (
    BadSample,
    DataFormatError,
    SkipCounter,
    TooManyBadSamplesError,
    collate_skipping,
    load_preference_data,
    write_pairs_jsonl,
    write_pickapic_parquet,
    write_ranked_jsonl,
    write_unpaired_jsonl,
)


def _rows(solid, n=4):
    return [{"caption": f"prompt {k}", "jpg_0": solid(2 * k), "jpg_1": solid(2 * k + 1), "label_0": 1} for k in range(n)]


# ---------------------------------------------------------------- structural problems, found at load


def test_missing_column_names_column_and_file(tmp_path, solid):
    path = write_pickapic_parquet(_rows(solid), tmp_path / "shard.parquet")
    table = pq.read_table(path).drop_columns(["label_0"])
    pq.write_table(table, path)
    with pytest.raises(DataFormatError, match=r"shard\.parquet: missing column 'label_0'"):
        load_preference_data(path)


def test_missing_prompt_column(tmp_path, solid):
    path = write_pickapic_parquet(_rows(solid), tmp_path / "shard.parquet")
    pq.write_table(pq.read_table(path).drop_columns(["caption"]), path)
    with pytest.raises(DataFormatError, match=r"shard\.parquet: missing column 'prompt' \(or 'caption'\)"):
        load_preference_data(path)


def test_no_known_schema(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": ["a"]}), path)
    with pytest.raises(DataFormatError, match=r"x\.parquet: missing columns for kind='pairs'.*label_0"):
        load_preference_data(path)


@pytest.mark.parametrize("bad", [0.7, 2.0, -1.0, float("nan"), None])
def test_label_outside_allowed_names_file_row_field(tmp_path, solid, bad):
    rows = _rows(solid)
    rows[2]["label_0"] = bad
    write_pickapic_parquet(rows, tmp_path / "shard.parquet")
    with pytest.raises(DataFormatError) as err:
        load_preference_data(tmp_path / "shard.parquet")
    message = str(err.value)
    assert "shard.parquet, row 2, field 'label_0'" in message and "0, 0.5 or 1" in message


def test_label_of_unlabelled_rows_is_not_checked(tmp_path, solid):
    rows = [dict(r, has_label=True) for r in _rows(solid)]
    rows[1].update(has_label=False, label_0=0.0)
    write_pickapic_parquet(rows, tmp_path / "a.parquet")
    rows[1]["label_0"] = 7.0
    write_pickapic_parquet(rows, tmp_path / "b.parquet")
    assert len(load_preference_data(tmp_path / "b.parquet")) == 3


def test_empty_caption_is_a_counted_skip_or_an_error(tmp_path, solid):
    rows = _rows(solid, 8)
    rows[5]["caption"] = "   "
    write_pickapic_parquet(rows, tmp_path / "shard.parquet")
    ds = load_preference_data(tmp_path / "shard.parquet", max_bad_fraction=0.2)
    assert len(ds) == 7 and ds.summary()["dropped_empty_prompt"] == 1
    assert "prompt 5" not in [ds[i]["prompt"] for i in range(len(ds))]
    with pytest.raises(DataFormatError, match=r"shard\.parquet, row 5, field 'caption': empty prompt"):
        load_preference_data(tmp_path / "shard.parquet", empty_prompt="error")
    # past the fraction limit (1 of 8 rows > 1 %): loading fails and names the row
    with pytest.raises(DataFormatError, match=r"1 of 8 rows have an empty prompt.*row 5, field 'caption'"):
        load_preference_data(tmp_path / "shard.parquet", max_bad_fraction=0.01)


def test_jsonl_invalid_line_and_missing_field_name_the_line(tmp_path, solid):
    path = write_pairs_jsonl([{"prompt": "a", "chosen": solid(0), "rejected": solid(1)}] * 3, tmp_path / "p.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    with pytest.raises(DataFormatError, match=r"p\.jsonl, line 2: invalid JSON"):
        load_preference_data(path)
    record = json.loads(lines[0])
    del record["rejected"]
    path.write_text("\n".join([lines[0], lines[1], json.dumps(record)]) + "\n")
    with pytest.raises(DataFormatError, match=r"p\.jsonl, line 3, field 'rejected': field is missing"):
        load_preference_data(path)


def test_ranked_length_mismatch_and_bad_scores(tmp_path, solid):
    path = write_ranked_jsonl([{"prompt": "a", "images": [solid(0), solid(1)], "scores": [1, 0]}] * 2, tmp_path / "r.jsonl")
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["scores"] = [1.0, 0.5, 0.0]
    path.write_text(lines[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataFormatError, match=r"r\.jsonl, line 2, field 'images': 2 images but 3 scores"):
        load_preference_data(path, "ranked")
    record["scores"] = [1.0, "high"]
    path.write_text(lines[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataFormatError, match=r"r\.jsonl, line 2, field 'scores': scores must be finite"):
        load_preference_data(path, "ranked")


def test_unpaired_bad_label(tmp_path, solid):
    path = write_unpaired_jsonl([{"prompt": "a", "image": solid(0), "label": "good"}], tmp_path / "u.jsonl")
    with pytest.raises(DataFormatError, match=r"u\.jsonl, line 1, field 'label'"):
        load_preference_data(path, "unpaired")


# ---------------------------------------------------------------- image problems, counted skips


def _with_bad_images(tmp_path, solid, png_bytes):
    """8 pairs; row 2 has truncated JPEG bytes in jpg_1, row 5 a 1x1 jpg_0, row 6 garbage in jpg_0."""
    rows = _rows(solid, 8)
    jpeg = png_bytes(solid(99, size=64), "JPEG")
    rows[2]["jpg_1"] = jpeg[: len(jpeg) // 2]
    rows[5]["jpg_0"] = Image.new("RGB", (1, 1), (9, 9, 9))
    rows[6]["jpg_0"] = b"definitely not an image"
    return write_pickapic_parquet(rows, tmp_path / "shard.parquet")


def test_bad_images_are_bad_samples_naming_file_row_field(tmp_path, solid, png_bytes):
    path = _with_bad_images(tmp_path, solid, png_bytes)
    ds = load_preference_data(path, bad_image="drop")
    assert len(ds) == 8  # image problems are not found at load
    bad = {i: ds[i] for i in range(8) if isinstance(ds[i], BadSample)}
    assert sorted(bad) == [2, 5, 6]
    assert (bad[2].row, bad[2].field) == (2, "jpg_1") and "cannot decode image" in bad[2].reason
    assert bad[5].field == "jpg_0" and "1x1, smaller than min_image_size=16" in bad[5].reason
    assert bad[6].field == "jpg_0" and "UnidentifiedImageError" in bad[6].reason
    assert bad[2].describe().startswith(f"{path}, row 2, field 'jpg_1': cannot decode image")


def test_replace_mode_keeps_batch_size_and_reports_skips(tmp_path, solid, png_bytes):
    ds = load_preference_data(_with_bad_images(tmp_path, solid, png_bytes), max_bad_fraction=0.5)
    item = ds[5]  # 5 and 6 bad → replaced by 7
    assert item["prompt"] == "prompt 7" and [b.row for b in item["skipped"]] == [5, 6]
    assert ds[0]["skipped"] == []


def test_collate_and_counter_across_worker_processes(tmp_path, solid, png_bytes):
    ds = load_preference_data(_with_bad_images(tmp_path, solid, png_bytes), max_bad_fraction=0.5)
    for mode, workers in (("replace", 2), ("drop", 0)):
        ds.bad_image = mode
        collate = functools.partial(collate_skipping, collate_fn=lambda items: {"prompts": [i["prompt"] for i in items]})
        loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers, collate_fn=collate)
        counter = SkipCounter(len(ds), max_bad_fraction=0.5)
        seen = []
        for _ in range(2):  # two epochs: distinct bad items are counted once
            for batch in loader:
                counter.update(batch)
                seen += batch["prompts"]
                assert batch["num_items"] == len(batch["prompts"])
        summary = counter.as_dict()
        # replace: item 5 reads 5, 6 (bad) then 7; item 6 reads 6 again → 4 skip events per epoch
        assert summary["bad_samples"] == 3 and summary["skip_events"] == (8 if mode == "replace" else 6)
        assert summary["bad_fraction"] == pytest.approx(3 / 8)
        assert "shard.parquet, row 6, field 'jpg_0'" in summary["last_bad"]
        expected = 8 if mode == "replace" else 5
        assert len(seen) == 2 * expected


def test_fraction_limit_triggers_naming_the_last_bad_item(tmp_path, solid, png_bytes):
    ds = load_preference_data(_with_bad_images(tmp_path, solid, png_bytes), bad_image="drop")
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_skipping)
    counter = SkipCounter(len(ds), max_bad_fraction=0.2)  # budget 1.6 items → the 2nd distinct bad one raises
    with pytest.raises(TooManyBadSamplesError) as err:
        for batch in loader:
            counter.update(batch)
    message = str(err.value)
    assert "2 of 8 items" in message and "max_bad_fraction=20.00%" in message
    assert f"{tmp_path / 'shard.parquet'}, row 5, field 'jpg_0'" in message


def test_scan_finds_bad_items_and_without_drops_them(tmp_path, solid, png_bytes):
    ds = load_preference_data(_with_bad_images(tmp_path, solid, png_bytes))
    report = ds.scan(progress=False)
    assert [b.row for b in report.bad] == [2, 5, 6] and report.as_dict()["bad_samples"] == 3
    with pytest.raises(TooManyBadSamplesError, match=r"3 of 8 items.*row 6, field 'jpg_0'"):
        report.check(0.1)
    report.check(0.5)
    clean = ds.without(report.bad)
    assert len(clean) == 5 and all(clean[i]["skipped"] == [] for i in range(5))
    assert not isinstance(ds.image_keys(2), BadSample)  # truncated bytes still hash; only decoding fails
    assert isinstance(ds.image_keys(0), list) and len(ds.image_keys(0)) == 2


def test_missing_image_file_is_a_counted_skip(tmp_path, solid):
    path = write_pairs_jsonl([{"prompt": f"p{k}", "chosen": solid(2 * k), "rejected": solid(2 * k + 1)} for k in range(3)],
                             tmp_path / "p.jsonl")
    (tmp_path / json.loads(path.read_text().splitlines()[1])["rejected"]).unlink()
    ds = load_preference_data(path, bad_image="drop")
    bad = ds[1]
    assert isinstance(bad, BadSample) and bad.field == "rejected" and "cannot read image file" in bad.reason
    assert bad.describe().startswith(f"{path}, line 2, field 'rejected'")
    assert isinstance(ds.image_keys(1), BadSample)


def test_min_image_size_is_configurable(tmp_path, solid):
    path = write_pickapic_parquet(_rows(solid, 2), tmp_path / "a.parquet")  # 32x32 images
    assert isinstance(load_preference_data(path, min_image_size=33, bad_image="drop")[0], BadSample)
    assert not isinstance(load_preference_data(path, min_image_size=32, bad_image="drop")[0], BadSample)


def test_everything_bad_raises_clearly(tmp_path, solid):
    rows = _rows(solid, 2)
    for r in rows:
        r["jpg_0"] = b"xx"
    ds = load_preference_data(write_pickapic_parquet(rows, tmp_path / "a.parquet"))
    with pytest.raises(TooManyBadSamplesError, match="no readable item"):
        ds[0]


def test_truncated_jpeg_rejected_even_if_pil_allows_truncation(png_bytes, solid, monkeypatch):
    from PIL import ImageFile

    from mmalign.data import decode_image
    from mmalign.data.images import BadImageError

    jpeg = png_bytes(solid(3, size=64), "JPEG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImageError, match="cannot decode image"):
        decode_image(jpeg[: len(jpeg) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    assert decode_image(jpeg).size == (64, 64)


def test_ranked_parquet_with_short_image_list_is_a_counted_skip(tmp_path, solid):
    from mmalign.data import write_parquet_rows

    rows = [{"prompt": "ok", "images": [solid(0), solid(1)], "scores": [1.0, 0.0]},
            {"prompt": "short", "images": [solid(2)], "scores": [1.0, 0.0]}]
    path = write_parquet_rows(rows, tmp_path / "r.parquet", image_columns=("images",))
    ds = load_preference_data(path, "ranked", bad_image="drop")
    bad = ds[1]
    assert isinstance(bad, BadSample) and bad.row == 1 and bad.field == "images[1]"
    assert "'images' has 1 entries but the record has 2 scores" in bad.reason


def test_dataset_pickles_for_spawned_workers(tmp_path, solid):
    import pickle

    path = write_pickapic_parquet(_rows(solid), tmp_path / "a.parquet")
    ds = load_preference_data(path)
    before = ds[1]  # opens the parquet handle and fills the row-group cache
    clone = pickle.loads(pickle.dumps(ds))
    after = clone[1]
    assert after["chosen_key"] == before["chosen_key"] and after["chosen"].tobytes() == before["chosen"].tobytes()
