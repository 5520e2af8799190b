"""Old config keys still load for one release, with a DEPRECATED note naming the new key (YAML and command line),
and mean what they meant; the new spelling is the same in every family."""

from pathlib import Path

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.mllm.vlm.config import VLMRecipeConfig
from tests.helpers import REPO

DIFFUSION = REPO / "recipes/configs/diffusion/toy_dpo.yaml"
VLM = REPO / "recipes/configs/vlm/qwen2vl_dpo.yaml"
VIDEO = REPO / "recipes/configs/video/toy_temple.yaml"
VLM_REQUIRED = "model: {pretrained: x}\ndata: {path: x}\n"
VIDEO_REQUIRED = "output_dir: out\nmodel: {pretrained: tiny:qwen2vl}\n"


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "old.yaml"
    path.write_text(text)
    return path


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[int(part)] if part.isdigit() else getattr(cfg, part)
    return cfg


@pytest.mark.parametrize(("schema", "text", "old", "new", "value"), [
    (VLMRecipeConfig, VLM_REQUIRED + "lora: {r: 4}\n", "lora.r", "lora.rank", 4),
    (VLMRecipeConfig, VLM_REQUIRED + "lora: {enabled: false, r: 8}\n", "lora.enabled", "lora.rank", 0),
    (VLMRecipeConfig, VLM_REQUIRED + "lora: {enabled: true, r: 8}\n", "lora.enabled", "lora.rank", 8),
    (VLMRecipeConfig, VLM_REQUIRED + "lora: {target_modules: 'q_proj, v_proj'}\n", "lora.target_modules",
     "lora.target_modules", ["q_proj", "v_proj"]),
    (VLMRecipeConfig, VLM_REQUIRED + "method: {loss: ipo}\n", "method.loss", "method.loss_type", "ipo"),
    (VideoRecipeConfig, "output_dir: out\nmodel: {pretrained: tiny:qwen2vl, lora_r: 4}\n", "model.lora_r",
     "lora.rank", 4),
    (VideoRecipeConfig, "output_dir: out\nmodel: {pretrained: tiny:qwen2vl, lora_alpha: 12}\n", "model.lora_alpha",
     "lora.alpha", 12.0),
    (VideoRecipeConfig, "output_dir: out\nmodel: {pretrained: tiny:qwen2vl, lora_dropout: 0.05}\n",
     "model.lora_dropout", "lora.dropout", 0.05),
    (VideoRecipeConfig, "output_dir: out\nmodel: {pretrained: tiny:qwen2vl, lora_target: 'q_proj,k_proj'}\n",
     "model.lora_target", "lora.target_modules", ["q_proj", "k_proj"]),
    (VideoRecipeConfig, "output_dir: out\nmodel: {pretrained: tiny:qwen2vl, lora: false, lora_r: 16}\n",
     "model.lora", "lora.rank", 0),
    (VideoRecipeConfig, "output_dir: out\nmodel: {pretrained: tiny:qwen2vl, lora: true}\n", "model.lora",
     "lora.rank", 32),
    (VideoRecipeConfig, VIDEO_REQUIRED + "data: {train: rows.jsonl}\n", "data.train", "data.path", "rows.jsonl"),
    (VideoRecipeConfig, VIDEO_REQUIRED + "data: {on_error: raise}\n", "data.on_error", "data.on_bad_row", "error"),
    (VideoRecipeConfig, VIDEO_REQUIRED + "data: {on_error: skip}\n", "data.on_error", "data.on_bad_row", "skip"),
    (VideoRecipeConfig, VIDEO_REQUIRED + "data: {max_skip_fraction: 0.3}\n", "data.max_skip_fraction",
     "data.max_bad_fraction", 0.3),
    (VideoRecipeConfig, VIDEO_REQUIRED + "stages:\n  - {name: a, data: a.jsonl, lora_r: 4}\n", "stages.0.lora_r",
     "stages.0.lora_rank", 4),
    (DiffusionRecipeConfig, "model: {pretrained: x}\ndata: {path: x, max_skip_fraction: 0.2}\n",
     "data.max_skip_fraction", "data.max_bad_fraction", 0.2),
], ids=lambda v: v if isinstance(v, str) and "." in v and "\n" not in v else None)
def test_old_yaml_key_loads_with_a_note(tmp_path, capsys, schema, text, old, new, value):
    cfg = load_config(schema, _yaml(tmp_path, text))
    assert _get(cfg, new) == pytest.approx(value) if isinstance(value, float) else _get(cfg, new) == value
    err = capsys.readouterr().err
    assert "DEPRECATED:" in err and f"config key '{old}" in err and f"'{new.split(' ')[0]}" in err, err


@pytest.mark.parametrize(("schema", "path", "override", "new", "value"), [
    (VLMRecipeConfig, VLM, "lora.r=4", "lora.rank", 4),
    (VLMRecipeConfig, VLM, "lora.enabled=false", "lora.rank", 0),
    (VLMRecipeConfig, VLM, "--lora.enabled=true", "lora.rank", 16),
    (VLMRecipeConfig, VLM, "method.loss=ipo", "method.loss_type", "ipo"),
    (VideoRecipeConfig, VIDEO, "model.lora_r=4", "lora.rank", 4),
    (VideoRecipeConfig, VIDEO, "model.lora=false", "lora.rank", 0),
    (VideoRecipeConfig, VIDEO, "data.train=rows.jsonl", "data.path", "rows.jsonl"),
    (VideoRecipeConfig, VIDEO, "data.on_error=raise", "data.on_bad_row", "error"),
    (VideoRecipeConfig, VIDEO, "stages.1.lora_r=2", "stages.1.lora_rank", 2),
    (DiffusionRecipeConfig, DIFFUSION, "data.max_skip_fraction=0.5", "data.max_bad_fraction", 0.5),
])
def test_old_override_key_loads_with_a_note(capsys, schema, path, override, new, value):
    cfg = load_config(schema, path, [override])
    assert _get(cfg, new) == value
    assert "DEPRECATED: command line: config key" in capsys.readouterr().err


def test_new_keys_are_spelled_the_same_in_every_family(tmp_path):
    block = "lora: {rank: 0, alpha: 4, dropout: 0.1, target_modules: [q_proj]}\n"
    data = "{path: rows.jsonl, on_bad_row: skip, max_bad_fraction: 0.25}"
    for schema, head in ((DiffusionRecipeConfig, "model: {pretrained: x}\n"), (VLMRecipeConfig, "model: {pretrained: x}\n"),
                         (VideoRecipeConfig, VIDEO_REQUIRED)):
        cfg = load_config(schema, _yaml(tmp_path, head + block + f"data: {data}\n"))
        assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (0, 4.0, 0.1, ["q_proj"])
        assert not cfg.lora.enabled and type(cfg.lora).__module__ == "mmalign.lora_config"
        assert (cfg.data.path, cfg.data.on_bad_row, cfg.data.max_bad_fraction) == ("rows.jsonl", "skip", 0.25)


def test_family_lora_defaults():
    diffusion = load_config(DiffusionRecipeConfig, None, ["model.pretrained=x", "data.path=x"]).lora
    vlm = load_config(VLMRecipeConfig, None, ["model.pretrained=x", "data.path=x"]).lora
    video = load_config(VideoRecipeConfig, None, ["model.pretrained=x", "output_dir=o"]).lora
    assert (diffusion.rank, diffusion.scale_alpha, diffusion.init) == (8, 8, "gaussian")
    assert diffusion.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    assert (vlm.rank, vlm.scale_alpha, vlm.target_modules, vlm.peft_init()) == (16, 32.0, ["all-linear"], True)
    assert (video.rank, video.scale_alpha) == (32, 64.0)


def test_old_and_new_key_together_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="'lora.r' \\(deprecated\\) and 'lora.rank' are both set"):
        load_config(VLMRecipeConfig, _yaml(tmp_path, VLM_REQUIRED + "lora: {r: 4, rank: 8}\n"))


def test_shipped_configs_use_no_deprecated_key(capsys):
    for path in sorted((REPO / "recipes/configs").glob("*/*.yaml")):
        schema = {"diffusion": DiffusionRecipeConfig, "vlm": VLMRecipeConfig, "video": VideoRecipeConfig}[path.parent.name]
        try:
            load_config(schema, path)
        except ConfigError:  # a mandatory value left ??? for the user (data.path): the keys were read already
            pass
        assert "DEPRECATED" not in capsys.readouterr().err, path
