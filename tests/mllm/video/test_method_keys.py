"""Issue 23: a ``method.*`` key no video method of the run reads is a ConfigError naming the key and the method
(main accepted e.g. ``method.alpha`` on vdpo, ``method.magnitude`` on rrpo); robust / cdpo / simpo can set their
label smoothing and margin (main had no such keys: they ran with 0)."""

from __future__ import annotations

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.mllm.video import build
from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.mllm.video.methods import SPECS
from tests.helpers import REPO

CONFIGS = REPO / "recipes" / "configs" / "video"


@pytest.mark.parametrize("config,override,method", [
    ("qwen25vl_rrpo.yaml", "method.magnitude=8", "rrpo"),
    ("qwen25vl_rrpo.yaml", "method.loss_type=ipo", "rrpo"),
    ("qwen25vl_vdpo.yaml", "method.alpha=0.1", "vdpo"),
    ("qwen25vl_vdpo.yaml", "method.kl_chunk_size=128", "vdpo"),
    ("qwen25vl_temple.yaml", "method.frames_per_clip=4", "dpo"),  # a curriculum: no stage (dpo, sft) reads it
])
def test_a_key_no_method_of_the_run_reads_is_an_error(config, override, method):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' does not apply to method '{method}'"):
        load_config(VideoRecipeConfig, str(CONFIGS / config), [override])


@pytest.mark.parametrize("loss_type", ["robust", "cdpo", "simpo"])
def test_label_smoothing_and_gamma_reach_the_pair_step(monkeypatch, loss_type):
    cfg = load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_vdpo.yaml"),
                      [f"method.loss_type={loss_type}", "method.label_smoothing=0.1", "method.gamma=0.5"])
    seen = {}
    monkeypatch.setattr(build, "make_pair_step", lambda *args, **kwargs: seen.update(kwargs, args=args))
    build.build_step(cfg, "vdpo", None)
    assert seen["label_smoothing"] == 0.1 and seen["gamma"] == 0.5 and seen["args"][1] == loss_type


def test_one_spec_per_method_of_the_step_table():
    assert all(callable(s.hook("step")) and callable(s.hook("item")) for s in SPECS.values())
