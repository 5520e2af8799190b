"""Issue 26: which recorded config values a resume compares (mmalign.resume_check.shape_differences); the
recipes' one-line refusals are tested as subprocesses in tests/diffusion/test_resume_errors.py."""

from __future__ import annotations

import re

import pytest

from mmalign import checkpoint as ckpt
from mmalign.config import ConfigError
from mmalign.resume_check import check_resume, shape_differences

RECORDED = {"model": {"pretrained": "/runs/a/tiny_inputs/model_sd15", "freeze_vision": True},
            "method": {"name": "dpo", "beta": 5000}, "lora": {"rank": 8, "alpha": None,
                                                             "target_modules": ["to_q", "to_k"], "dropout": 0.0},
            "train": {"lr": 1e-4}}


def _now(**changes):
    import copy

    now = copy.deepcopy(RECORDED)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        now[section][key] = value
    return now


def test_same_config_and_settings_that_do_not_shape_the_weights_pass():
    assert shape_differences(RECORDED, RECORDED) == []
    assert shape_differences(RECORDED, _now(train__lr=1.0, method__beta=1, lora__dropout=0.1)) == []
    assert shape_differences(RECORDED, _now(lora__alpha=8)) == []  # null alpha is alpha = rank
    assert shape_differences(RECORDED, _now(lora__target_modules=["to_k", "to_q"])) == []  # order is not a shape
    assert shape_differences(RECORDED, _now(model__pretrained="tiny:sd15")) == []  # what tiny:sd15 resolved to


@pytest.mark.parametrize(("change", "key"), [
    ({"lora__rank": 4}, "lora.rank"), ({"lora__rank": 0}, "lora.rank"), ({"lora__alpha": 16}, "lora.alpha"),
    ({"lora__target_modules": ["to_q"]}, "lora.target_modules"), ({"method__name": "kto"}, "method.name"),
    ({"model__pretrained": "tiny:sdxl"}, "model.pretrained"), ({"model__freeze_vision": False}, "model.freeze_vision"),
])
def test_each_shape_key_is_compared(change, key):
    assert shape_differences(RECORDED, _now(**change))[0][0] == key  # the first differing key is named


def test_keys_missing_from_the_record_are_not_compared():
    assert shape_differences({"lora": {"rank": 8}}, _now(lora__alpha=64, method__name="kto")) == []


def test_no_resume_and_latest_without_checkpoints_are_fresh_starts(tmp_path):
    from types import SimpleNamespace

    cfg = SimpleNamespace(train=SimpleNamespace(resume=None, resume_require_rng_state=True))
    assert check_resume(cfg, tmp_path) is None
    cfg.train.resume = "latest"
    assert check_resume(cfg, tmp_path) is None
    cfg.train.resume = str(tmp_path)
    (ckpt.final_path(tmp_path, 3)).mkdir(parents=True)
    ckpt.write_state(ckpt.final_path(tmp_path, 3), {"step": 3, "micro_batches": 3})
    with pytest.raises(ConfigError, match=f"{tmp_path} is not a complete checkpoint .*its newest is .*checkpoint-3"):
        check_resume(cfg, tmp_path)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"step": 2}'])
def test_a_trainer_state_that_is_not_one_is_named(tmp_path, content):
    from types import SimpleNamespace

    folder = ckpt.final_path(tmp_path, 2)
    folder.mkdir(parents=True)
    (folder / ckpt.STATE_FILE).write_text(content)
    cfg = SimpleNamespace(train=SimpleNamespace(resume="latest", resume_require_rng_state=True))
    with pytest.raises(ConfigError, match=f"train.resume: {folder / ckpt.STATE_FILE} is not a usable trainer state"):
        check_resume(cfg, tmp_path)


@pytest.mark.parametrize(("family", "config", "override", "key"), [
    ("vlm", "vlm/qwen2vl_dpo.yaml", "lora.rank=0", "lora.rank is 0 (full fine-tuning) in this config but 16"),
    ("vlm", "vlm/qwen2vl_dpo.yaml", "model.freeze_vision=false", "model.freeze_vision is false"),
    ("video", "video/qwen25vl_rrpo.yaml", "lora.rank=8", "lora.rank is 8 in this config but 128"),
    ("video", "video/qwen25vl_rrpo.yaml", "method.name=sft", "method.name is 'sft' in this config but 'rrpo'"),
])
def test_vlm_and_video_recipes_check_the_resume_before_the_model_loads(tmp_path, family, config, override, key):
    """The recipes call check_resume first: the model folder here is empty, so any load would fail otherwise."""
    from mmalign.config import load_config, to_dict
    from mmalign.mllm.video.config import VideoRecipeConfig
    from mmalign.mllm.vlm.config import VLMRecipeConfig
    from mmalign.recipe_entry import run_recipe_file
    from tests.helpers import REPO

    model, data, out = tmp_path / "model", tmp_path / "rows.jsonl", tmp_path / "run"
    model.mkdir()
    data.write_text("{}\n")
    path = REPO / "recipes" / "configs" / config
    common = [f"model.pretrained={model}", f"data.path={data}", f"output_dir={out}"]
    schema = VLMRecipeConfig if family == "vlm" else VideoRecipeConfig
    folder = ckpt.final_path(out, 2)
    folder.mkdir(parents=True)
    ckpt.write_state(folder, {"step": 2, "micro_batches": 2})
    ckpt.save_run_config(folder, to_dict(load_config(schema, path, common)))
    with pytest.raises(ConfigError, match=re.escape(f"train.resume: {key}")):
        run_recipe_file(REPO / "recipes" / f"{family}.py", ["--config", str(path), *common, override,
                                                             "train.resume=latest", "train.resume_require_rng_state=false"])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # nothing written (not even the lock)


def test_a_checkpoint_without_its_trained_weights_is_named(tmp_path):
    from types import SimpleNamespace

    folder = ckpt.final_path(tmp_path, 2)
    folder.mkdir(parents=True)
    ckpt.write_state(folder, {"step": 2, "micro_batches": 2})
    cfg = SimpleNamespace(train=SimpleNamespace(resume="latest", resume_require_rng_state=False))
    with pytest.raises(ConfigError, match=re.escape(f"train.resume: {folder / ckpt.TRAINABLE_FILE} is missing")):
        check_resume(cfg, tmp_path)
    (folder / "pytorch_model_fsdp_0").mkdir()  # FSDP / DeepSpeed: accelerate saved the (sharded) model itself
    assert check_resume(cfg, tmp_path) == folder


def test_model_pretrained_is_compared_where_it_can_be_without_loading(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "moved", tmp_path / "other"
    for folder, text in ((a, '{"_class_name": "StableDiffusionPipeline"}'), (b, '{"_class_name": "StableDiffusionPipeline"}'),
                         (c, '{"_class_name": "StableDiffusionXLPipeline"}')):
        folder.mkdir()
        (folder / "model_index.json").write_text(text)
    record = {"model": {"pretrained": str(a)}}
    assert shape_differences(record, {"model": {"pretrained": str(b)}}) == []  # the same folder moved / copied
    assert shape_differences(record, {"model": {"pretrained": str(c)}})[0][0] == "model.pretrained"
    hub = {"model": {"pretrained": "org/model-a"}}
    assert shape_differences(hub, {"model": {"pretrained": "org/model-b"}})[0][0] == "model.pretrained"
    assert shape_differences(hub, {"model": {"pretrained": str(a)}}) == []  # a download of it? cannot tell offline
