"""Issue 23: a ``method.*`` key the chosen VLM method does not read is a ConfigError naming the key and the method
(main accepted mDPO's crop / anchor keys and rDPO's scoring switch on plain DPO and trained without them)."""

from __future__ import annotations

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.mllm.vlm.config import VLMRecipeConfig
from mmalign.mllm.vlm.methods import SPECS
from mmalign.mllm.vlm.objective import METHODS
from tests.helpers import REPO

CONFIGS = REPO / "recipes" / "configs" / "vlm"


@pytest.mark.parametrize("config,override,method", [
    ("qwen2vl_dpo.yaml", "method.anchor_delta=0.1", "dpo"),
    ("qwen2vl_dpo.yaml", "method.crop_scale_min=0.05", "dpo"),
    ("qwen2vl_dpo.yaml", "method.rdpo_noisy=true", "dpo"),
    ("qwen25vl_mdpo.yaml", "method.rdpo_noisy=true", "mdpo"),
])
def test_a_key_the_method_does_not_read_is_an_error(config, override, method):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' does not apply to method '{method}'"):
        load_config(VLMRecipeConfig, str(CONFIGS / config), [override])


def test_a_shipped_config_switched_to_the_method_that_reads_it_loads():
    cfg = load_config(VLMRecipeConfig, str(CONFIGS / "qwen2vl_dpo.yaml"),
                      ["method.name=mdpo", "method.anchor_delta=0.1"])
    assert cfg.method.anchor_delta == 0.1


def test_one_spec_per_method_of_the_step_table():
    assert set(SPECS) == set(METHODS)
