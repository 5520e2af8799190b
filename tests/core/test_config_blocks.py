"""The shared config blocks (issue 23 item 3): one spelling, one default and one class per concept in every family;
the old spellings still load for one release with a deprecation note, from YAML and from the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mmalign import config_blocks
from mmalign.config import ConfigError, load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.mllm.vlm.config import VLMRecipeConfig
from tests.helpers import REPO

DIFFUSION_REQUIRED = "model: {pretrained: x}\ndata: {path: x}\n"
VLM_REQUIRED = "model: {pretrained: x}\ndata: {path: x}\n"
VIDEO_REQUIRED = "output_dir: out\nmodel: {pretrained: tiny:qwen2vl}\n"
FAMILIES = {"diffusion": DiffusionRecipeConfig, "vlm": VLMRecipeConfig, "video": VideoRecipeConfig}


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(text)
    return path


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[int(part)] if part.isdigit() else getattr(cfg, part)
    return cfg


OLD_SPELLINGS = [
    # (schema, required YAML, old YAML fragment, old key, command-line override, new key, value)
    (DiffusionRecipeConfig, "data: {path: x}\n", "model: {pretrained: x, attention: xformers}\n", "model.attention",
     "model.attention=xformers", "model.attn_implementation", "xformers"),
    (DiffusionRecipeConfig, "model: {pretrained: x}\n", "data: {path: x, limit: 7}\n", "data.limit", "data.limit=7",
     "data.max_rows", 7),
    (DiffusionRecipeConfig, DIFFUSION_REQUIRED, "toy_eval: {enabled: true, max_captions: 3}\n", "toy_eval.enabled",
     "toy_eval.enabled=true", "eval.enabled", True),
    (DiffusionRecipeConfig, DIFFUSION_REQUIRED, "toy_eval: {seeds: [4, 5]}\n", "toy_eval.seeds", "toy_eval.seeds=[4,5]",
     "eval.seeds", [4, 5]),
    (VLMRecipeConfig, "model: {pretrained: x}\n", "data: {path: x, image_root: imgs}\n", "data.image_root",
     "data.image_root=imgs", "data.media_root", "imgs"),
    (VideoRecipeConfig, VIDEO_REQUIRED, "data: {video_root: clips}\n", "data.video_root", "data.video_root=clips",
     "data.media_root", "clips"),
    (VideoRecipeConfig, "output_dir: out\n", "model: {pretrained: x, train_vision: true}\n", "model.train_vision",
     "model.train_vision=true", "model.freeze_vision", False),
    (VideoRecipeConfig, "output_dir: out\n", "model: {pretrained: x, train_vision: false}\n", "model.train_vision",
     "model.train_vision=false", "model.freeze_vision", True),
    (VideoRecipeConfig, VIDEO_REQUIRED, "stages:\n  - {name: a, data: a.jsonl, train_vision: true}\n",
     "stages.0.train_vision", None, "stages.0.freeze_vision", False),
]
IDS = [f"{case[0].__name__}:{case[3]}={case[6]}" for case in OLD_SPELLINGS]


@pytest.mark.parametrize(("schema", "required", "old_yaml", "old", "override", "new", "value"), OLD_SPELLINGS, ids=IDS)
def test_old_spelling_in_yaml_loads_with_a_note(tmp_path, capsys, schema, required, old_yaml, old, override, new,
                                                value):
    cfg = load_config(schema, _yaml(tmp_path, required + old_yaml))
    assert _get(cfg, new) == value
    err = capsys.readouterr().err
    assert "DEPRECATED:" in err and f"config key '{old}' is now '{new}" in err, err


@pytest.mark.parametrize(("schema", "required", "old_yaml", "old", "override", "new", "value"), OLD_SPELLINGS, ids=IDS)
def test_old_spelling_on_the_command_line_loads_with_a_note(tmp_path, capsys, schema, required, old_yaml, old,
                                                            override, new, value):
    base = required + ("stages:\n  - {name: a, data: a.jsonl}\n" if old.startswith("stages.") else "")
    if "pretrained" not in base:
        base += "model: {pretrained: x}\n"
    if schema is not VideoRecipeConfig and "data:" not in base:
        base += "data: {path: x}\n"
    override = override or f"{old}={str(not value).lower()}"
    cfg = load_config(schema, _yaml(tmp_path, base), [override])
    assert _get(cfg, new) == value
    err = capsys.readouterr().err
    assert "DEPRECATED: command line:" in err and f"config key '{old}'" in err, err


def test_one_class_per_block_in_every_family():
    """``model`` / ``data`` / ``export`` / ``eval`` extend the shared block; no two block classes share a name."""
    names: dict[str, type] = {}
    for family, schema in FAMILIES.items():
        hints = {f.name: f.type for f in dataclasses.fields(schema)}
        cfg = load_config(schema, None, ["model.pretrained=x", "data.path=x", "output_dir=o"])
        for block, shared in (("model", config_blocks.ModelConfig), ("data", config_blocks.DataConfig),
                              ("export", config_blocks.ExportConfig)):
            assert isinstance(getattr(cfg, block), shared), (family, block, hints[block])
        if hasattr(cfg, "eval"):
            assert isinstance(cfg.eval, config_blocks.EvalConfig), family
        for key, value in vars(cfg).items():
            if dataclasses.is_dataclass(value) and key != "method":  # method blocks: the method registries' work
                cls = type(value)
                assert names.setdefault(cls.__name__, cls) is cls, f"two classes named {cls.__name__}"


def test_shared_keys_have_one_default_and_spelling():
    cfgs = {family: load_config(schema, None, ["model.pretrained=x", "data.path=x", "output_dir=o"])
            for family, schema in FAMILIES.items()}
    for cfg in cfgs.values():
        assert (cfg.data.on_bad_row, cfg.data.max_bad_fraction, cfg.data.max_rows, cfg.data.media_root) == (
            "error", 0.05, None, None)
        assert cfg.model.attn_implementation == "sdpa" and cfg.model.gradient_checkpointing is False
        assert cfg.export.enabled is True
    assert cfgs["diffusion"].model.dtype is None  # the mixed-precision dtype, as before
    assert cfgs["vlm"].model.dtype == cfgs["video"].model.dtype == "float32"
    assert cfgs["vlm"].model.freeze_vision is cfgs["video"].model.freeze_vision is True


def test_shared_values_are_range_checked_in_every_family():
    for schema in FAMILIES.values():
        with pytest.raises(ConfigError, match="data.max_rows"):
            load_config(schema, None, ["model.pretrained=x", "data.path=x", "output_dir=o", "data.max_rows=0"])
        with pytest.raises(ConfigError, match="data.on_bad_row"):
            load_config(schema, None, ["model.pretrained=x", "data.path=x", "output_dir=o", "data.on_bad_row=drop"])
        with pytest.raises(ConfigError, match="model.dtype"):
            load_config(schema, None, ["model.pretrained=x", "data.path=x", "output_dir=o", "model.dtype=int8"])


def test_diffusion_model_dtype_sets_the_frozen_weights():
    import torch

    from mmalign.diffusion.build import frozen_dtype

    cfg = load_config(DiffusionRecipeConfig, None, ["model.pretrained=x", "data.path=x", "train.mixed_precision=bf16"])
    assert frozen_dtype(cfg) == torch.bfloat16
    cfg.model.dtype = "float32"
    assert frozen_dtype(cfg) == torch.float32


def test_diffusion_refuses_a_media_root_it_would_not_read():
    from mmalign.diffusion.build import check_config

    cfg = load_config(DiffusionRecipeConfig, None, ["model.pretrained=x", "data.path=x", "data.media_root=imgs"])
    with pytest.raises(ConfigError, match="data.media_root"):
        check_config(cfg)


def test_shipped_configs_spell_the_shared_keys(capsys):
    for path in sorted((REPO / "recipes/configs").glob("*/*.yaml")):
        text = path.read_text()
        for old in ("attention:", "toy_eval:", "train_vision", "video_root", "image_root", "  limit:"):
            assert f"\n  {old}" not in text and not text.startswith(old) and f"\n{old}" not in text, (path, old)
