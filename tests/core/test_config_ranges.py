"""Every numeric / enum config value is range-checked when the config loads, before any model (issue 18):
a ConfigError naming the key, the value and the allowed range; YAML errors name file, line and column."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.mllm.vlm.config import VLMRecipeConfig
from mmalign.train_config import TrainConfig
from mmalign.training.loop import train
from tests.helpers import REPO

DIFFUSION = REPO / "recipes/configs/diffusion/toy_dpo.yaml"
VLM = REPO / "recipes/configs/vlm/qwen2vl_dpo.yaml"
VIDEO = REPO / "recipes/configs/video/toy_temple.yaml"


BAD_DIFFUSION = [
    ("train.lr", "-1e-4"), ("train.lr", "nan"), ("train.lr", "inf"), ("train.batch_size", "0"),
    ("train.grad_accum", "0"), ("train.log_every", "0"), ("train.max_steps", "0"), ("train.warmup_steps", "-1"),
    ("train.checkpoint_every", "-1"), ("train.keep_checkpoints", "-1"), ("train.lr_scheduler", "cosine_annealing"),
    ("train.lr_scheduler", "reduce_lr_on_plateau"), ("train.optimizer", "sgd"), ("train.adam_beta2", "1.0"),
    ("train.seed", "-3"), ("train.max_nonfinite_steps", "0"), ("data.resolution", "0"), ("data.resolution", "100"),
    ("data.max_bad_fraction", "1.5"), ("data.max_rows", "0"), ("data.latent_sample", "mode"),
    ("method.beta", "-5000"), ("method.beta", "0"), ("method.empty_prompt_prob", "1.2"),
    ("method.timestep_weight", "snr"), ("method.inpo.noise.inversion_steps", "0"), ("method.smpo.order", "random"),
    ("method.ppd.user_dropout", "2"), ("lora.rank", "-1"), ("lora.dropout", "1"), ("model.attn_implementation", "flash"),
    ("validation.num_inference_steps", "0"), ("export.ema_decay", "1.5"), ("eval.batch_size", "0"),
]


@pytest.mark.parametrize(("key", "value"), BAD_DIFFUSION, ids=[f"{k}={v}" for k, v in BAD_DIFFUSION])
def test_bad_diffusion_value_is_a_config_error_naming_key_and_range(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(DiffusionRecipeConfig, DIFFUSION, [f"{key}={value}"])
    message = str(info.value)
    assert f"'{key}'" in message and ("allowed" in message or "finite" in message), message
    assert "\n" not in message


BAD_VLM = [("method.beta", "-0.1"), ("method.label_smoothing", "0.7"), ("lora.rank", "-1"), ("data.max_length", "0"),
           ("data.on_bad_row", "ignore"), ("data.max_bad_fraction", "-0.1"), ("model.dtype", "float64"),
           ("train.batch_size", "0")]


@pytest.mark.parametrize(("key", "value"), BAD_VLM, ids=[f"{k}={v}" for k, v in BAD_VLM])
def test_bad_vlm_value_is_a_config_error(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(VLMRecipeConfig, VLM, [f"{key}={value}"])


BAD_VIDEO = [("method.beta", "-1"), ("method.loss_type", "dpo"), ("video.num_frames", "0"), ("video.fps", "0"), ("video.min_frames", "20"),
             ("data.on_bad_row", "ignore"), ("lora.rank", "-1"), ("train.log_every", "0")]


# method.vdpo.* / method.rrpo.* ranges: tests/mllm/video/test_method_keys.py (this config's stages read neither)
@pytest.mark.parametrize(("key", "value"), BAD_VIDEO, ids=[f"{k}={v}" for k, v in BAD_VIDEO])
def test_bad_video_value_is_a_config_error(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(VideoRecipeConfig, VIDEO, [f"{key}={value}"])
    assert key.split(".")[-1] in str(info.value), str(info.value)


def test_stage_values_are_checked_with_their_index(tmp_path):
    cfg = tmp_path / "stages.yaml"
    text = "output_dir: out\nmodel: {pretrained: tiny:qwen2vl}\nstages:\n" \
           "  - {name: a, data: a.jsonl}\n  - {name: b, data: b.jsonl, epochs: -1}\n"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"'stages\.1\.epochs': -1"):
        load_config(VideoRecipeConfig, cfg)


def test_every_shipped_config_passes_the_checks():
    schemas = {"diffusion": DiffusionRecipeConfig, "vlm": VLMRecipeConfig, "video": VideoRecipeConfig}
    paths = sorted(glob.glob(str(REPO / "recipes/configs/*/*.yaml")))
    assert len(paths) > 30
    for path in paths:
        load_config(schemas[Path(path).parent.name], path)


def test_train_checks_a_directly_built_train_config(tmp_path, tiny):
    with pytest.raises(ConfigError, match="'train.grad_accum': 0"):
        train(TrainConfig(grad_accum=0, progress_bar=False), output_dir=tmp_path, model=tiny.make_model(),
              dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())


@pytest.mark.parametrize(("text", "where"), [
    ("train:\n  lr: [1,\n  x: 2\n", "line 4, column 1"),
    ("train:\n  lr: 1\n\tx: 2\n", "line 3, column 1"),
    ("train: !!python/object/apply:os.system ['echo pwned']\n", "line 1, column 8"),
    ("train:\n  lr: !custom 3\n", "line 2, column 7"),
])
def test_yaml_errors_and_tags_name_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(DiffusionRecipeConfig, path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}: not valid YAML"), message
    assert "\n" not in message
    if "python" in text:
        assert "'!!python/object/apply:os.system' is not allowed" in message


def test_output_dir_that_is_a_file_is_a_config_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker, blocker / "run"):
        with pytest.raises(ConfigError, match="is a file"):
            load_config(DiffusionRecipeConfig, DIFFUSION, [f"output_dir={out}"])


def test_recipe_bad_value_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "recipes/diffusion.py"), "--config", str(DIFFUSION), "train.log_every=0",
         f"output_dir={out}"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "diffusion.py: error: config key 'train.log_every': 0 is out of range; allowed: >= 1"]
    assert not out.exists()
