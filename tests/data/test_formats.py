"""jsonl + image files, explicit pairs, dual captions, ranked lists and unpaired labels: round trips."""

import json

import datasets
import pytest

from mmalign.data import (
    load_preference_data,
    write_pairs_jsonl,
    write_parquet_rows,
    write_pickapic_parquet,
    write_ranked_jsonl,
    write_unpaired_jsonl,
)


def same(a, b) -> bool:
    return a.mode == b.mode == "RGB" and a.size == b.size and a.tobytes() == b.tobytes()


def test_pairs_jsonl_round_trip(tmp_path, solid):
    rows = [{"prompt": f"p{k}", "chosen": solid(2 * k), "rejected": solid(2 * k + 1)} for k in range(3)]
    path = write_pairs_jsonl(rows, tmp_path / "pairs.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert first["chosen"].startswith("images/") and (tmp_path / first["chosen"]).exists()
    ds = load_preference_data(path)
    assert len(ds) == 3 and not ds.is_dual
    for k in range(3):
        item = ds[k]
        assert item["prompt"] == f"p{k}" and same(item["chosen"], solid(2 * k)) and same(item["rejected"], solid(2 * k + 1))
        assert item["id"] == f"{path}:{k}"
    # a folder holding one jsonl file works too
    assert len(load_preference_data(tmp_path)) == 3


def test_dual_caption_jsonl(tmp_path, solid):
    rows = [{"prompt": "a cat", "prompt_chosen": "a red cat", "prompt_rejected": "a blue dog",
             "chosen": solid(0), "rejected": solid(1)}]
    ds = load_preference_data(write_pairs_jsonl(rows, tmp_path / "dual.jsonl"))
    item = ds[0]
    assert ds.is_dual
    assert (item["prompt"], item["prompt_chosen"], item["prompt_rejected"]) == ("a cat", "a red cat", "a blue dog")
    # without a shared prompt the chosen caption is the prompt
    rows = [{k: v for k, v in rows[0].items() if k != "prompt"}]
    item = load_preference_data(write_pairs_jsonl(rows, tmp_path / "dual2.jsonl"))[0]
    assert item["prompt"] == "a red cat"


def test_ranked_jsonl_sorted_best_first(tmp_path, solid):
    rows = [
        {"prompt": "four", "images": [solid(0), solid(1), solid(2), solid(3)], "scores": [0.25, 1.0, 0.0, 0.5]},
        {"prompt": "tie", "images": [solid(4), solid(5)], "scores": [0.5, 0.5]},
    ]
    ds = load_preference_data(write_ranked_jsonl(rows, tmp_path / "ranked.jsonl"), "ranked")
    item = ds[0]
    assert item["scores"] == [1.0, 0.5, 0.25, 0.0]
    for image, k in zip(item["images"], [1, 3, 0, 2]):
        assert same(image, solid(k))
    assert len(item["image_keys"]) == 4 and len(set(item["image_keys"])) == 4
    tie = ds[1]  # equal scores keep file order
    assert same(tie["images"][0], solid(4)) and tie["scores"] == [0.5, 0.5]


def test_ranked_parquet_with_image_lists(tmp_path, solid):
    rows = [{"prompt": "x", "images": [solid(0), solid(1), solid(2)], "scores": [0.0, 2.0, 1.0]}]
    path = write_parquet_rows(rows, tmp_path / "ranked.parquet", image_columns=("images",))
    item = load_preference_data(path, "ranked")[0]
    assert item["scores"] == [2.0, 1.0, 0.0] and same(item["images"][0], solid(1))


def test_unpaired_jsonl_and_labels(tmp_path, solid):
    rows = [{"prompt": "a", "image": solid(0), "label": True}, {"prompt": "b", "image": solid(1), "label": False},
            {"prompt": "c", "image": solid(2), "label": 1}, {"prompt": "d", "image": solid(3), "label": -1}]
    ds = load_preference_data(write_unpaired_jsonl(rows, tmp_path / "u.jsonl"), "unpaired")
    assert [ds[i]["label"] for i in range(4)] == [True, False, True, False]
    item = ds[2]
    assert item["prompt"] == "c" and same(item["image"], solid(2)) and len(item["image_key"]) == 40


def test_pairs_read_as_unpaired_give_two_items_each(tmp_path, pickapic_rows, solid):
    write_pickapic_parquet(pickapic_rows, tmp_path / "p.parquet")
    ds = load_preference_data(tmp_path / "p.parquet", "unpaired")
    assert len(ds) == 10  # 5 non-tie pairs
    chosen, rejected = ds[2], ds[3]  # row 1: label_0 == 0 → jpg_1 chosen
    assert chosen["label"] is True and rejected["label"] is False
    assert same(chosen["image"], solid(3)) and same(rejected["image"], solid(2))
    assert chosen["id"].endswith(":1:chosen") and rejected["id"].endswith(":1:rejected")


def test_explicit_pairs_parquet_and_image_feature_dataset(tmp_path, solid):
    rows = [{"prompt": f"p{k}", "chosen": solid(2 * k), "rejected": solid(2 * k + 1)} for k in range(2)]
    path = write_parquet_rows(rows, tmp_path / "pairs.parquet", image_columns=("chosen", "rejected"))
    assert same(load_preference_data(path)[1]["rejected"], solid(3))
    hf = datasets.Dataset.from_dict({"prompt": ["p0", "p1"], "chosen": [solid(0), solid(2)],
                                     "rejected": [solid(1), solid(3)]})
    hf = hf.cast_column("chosen", datasets.Image()).cast_column("rejected", datasets.Image())
    hf.save_to_disk(tmp_path / "hf")
    ds = load_preference_data(tmp_path / "hf")
    assert same(ds[1]["chosen"], solid(2)) and same(ds[1]["rejected"], solid(3))


def test_max_items_and_dreamlike_filter(tmp_path, pickapic_rows):
    rows = [dict(r, model_0="dreamlike-v2" if k % 2 else "sdxl", model_1="dreamlike-photoreal")
            for k, r in enumerate(pickapic_rows)]
    write_pickapic_parquet(rows, tmp_path / "p.parquet")
    assert len(load_preference_data(tmp_path / "p.parquet", max_items=2)) == 2
    ds = load_preference_data(tmp_path / "p.parquet", dreamlike_pairs_only=True)
    assert len(ds) == 3 and ds.summary()["dropped_not_dreamlike"] == 3  # odd rows 1, 3, 5 kept


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not a local path"):
        load_preference_data("no-such-owner/no-such-dataset")


def test_kto_csv_with_string_labels(tmp_path, solid):
    (tmp_path / "imgs").mkdir()
    for k in range(3):
        solid(k).save(tmp_path / "imgs" / f"{k}.png")
    (tmp_path / "kto.csv").write_text(
        "file_path,caption,label\n"
        "imgs/0.png,a red one,exclusive_win\n"
        'imgs/1.png,"a green, quoted one",exclusive_lose\n'
        "imgs/2.png,a blue one,intersections\n"
    )
    ds = load_preference_data(tmp_path / "kto.csv", "unpaired")
    assert [ds[i]["label"] for i in range(3)] == [True, False, True]
    assert ds[1]["prompt"] == "a green, quoted one" and same(ds[1]["image"], solid(1))
    (tmp_path / "bad.csv").write_text("file_path,caption,label\nimgs/0.png,x,maybe\n")
    with pytest.raises(Exception, match=r"bad\.csv, line 2, field 'label'"):
        load_preference_data(tmp_path / "bad.csv", "unpaired")
    (tmp_path / "short.csv").write_text("file_path,caption,label\nimgs/0.png,x,1\nimgs/1.png,y\n")
    with pytest.raises(Exception, match=r"short\.csv, line 3, field 'label': field is missing"):
        load_preference_data(tmp_path / "short.csv", "unpaired")


def test_extra_columns_pass_through(tmp_path, pickapic_rows):
    rows = [dict(r, user_id=100 + k) for k, r in enumerate(pickapic_rows)]
    write_pickapic_parquet(rows, tmp_path / "p.parquet")
    ds = load_preference_data(tmp_path / "p.parquet", extra_columns=("user_id",))
    assert [ds[i]["user_id"] for i in range(len(ds))] == [100, 101, 103, 104, 105]
    unpaired = load_preference_data(tmp_path / "p.parquet", "unpaired", extra_columns=["user_id"])
    assert unpaired[3]["user_id"] == 101
    with pytest.raises(Exception, match=r"p\.parquet: missing column 'model_0'"):
        load_preference_data(tmp_path / "p.parquet", extra_columns=("model_0",))


def test_ranked_dataset_folder_with_image_lists(tmp_path, solid):
    hf = datasets.Dataset.from_dict({"prompt": ["x"], "images": [[solid(0), solid(1), solid(2)]],
                                     "scores": [[0.1, 0.5, 0.2]]})
    hf.save_to_disk(tmp_path / "ranked")
    item = load_preference_data(tmp_path / "ranked", "ranked")[0]
    assert item["scores"] == [0.5, 0.2, 0.1]
    assert [same(a, solid(k)) for a, k in zip(item["images"], [1, 2, 0])] == [True] * 3


def test_pickapic_schema_jsonl_with_optional_fields_on_some_lines(tmp_path, solid):
    solid(0).save(tmp_path / "a.png")
    solid(1).save(tmp_path / "b.png")
    lines = [
        {"caption": "x", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 0},
        {"caption": "y", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 1, "has_label": False},
        {"caption": "z", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 1, "has_label": True},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    ds = load_preference_data(tmp_path / "p.jsonl")
    assert [ds[i]["prompt"] for i in range(len(ds))] == ["x", "z"] and ds.summary()["dropped_no_label"] == 1
    assert same(ds[0]["chosen"], solid(1))
