"""The online methods' options and reward block: every bad value is a ConfigError naming the key, before any model
loads (issue 24 item 5)."""

from __future__ import annotations

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from tests.helpers import REPO

CONFIGS = REPO / "recipes" / "configs" / "diffusion"


def load(config: str, *overrides: str) -> DiffusionRecipeConfig:
    return load_config(DiffusionRecipeConfig, CONFIGS / config, list(overrides))


def test_shipped_online_configs_load():
    cfg = load("toy_online_dpo.yaml")
    assert cfg.method.name == "online_dpo" and cfg.reward.scorers == {"toy": 1.0}
    assert "reward" in cfg.as_dict() and "online_dpo" in cfg.as_dict()["method"]
    assert "reward" not in load("toy_dpo.yaml").as_dict()  # an offline run's saved config has no reward block


@pytest.mark.parametrize("overrides, message", [
    (["method.online_dpo.group_size=1"], r"method\.online_dpo\.group_size': 1 is out of range; allowed: >= 2"),
    (["method.online_dpo.prompts_per_epoch=0"], r"prompts_per_epoch': 0 is out of range"),
    (["method.online_dpo.ref_update_step=-1"], r"ref_update_step': -1 is out of range"),
    (["method.online_dpo.sde=euler"], r"method\.online_dpo\.sde': 'euler' is not allowed"),
    (["method.online_dpo.label_smoothing=0.1"], "label_smoothing .* cdpo and robust only"),
    (["reward.scorers={nope: 1.0}"], "unknown reward scorer 'nope' \\(known: aesthetic, clipscore"),
    (["reward.scorers={toy: .nan}"], "scorers.toy: the weight must be a finite number"),
    (["reward.checkpoints={pickscore: /x}"], "checkpoints.pickscore: 'pickscore' is not one of reward.scorers"),
    (["reward.normalize=softmax"], r"reward\.normalize': 'softmax' is not allowed"),
    (["reward.device=tpu"], "device: 'tpu'"),
    (["train.num_workers=2"], "num_workers .* must be 0"),
    (["method.grpo.clip_range=0.1"], "option of method 'grpo', but method.name is 'online_dpo'"),
    (["data.kind=pairs"], "data.kind"),
])
def test_online_dpo_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load("toy_online_dpo.yaml", *overrides)


@pytest.mark.parametrize("overrides, message", [
    (["method.grpo.group_size=1"], r"method\.grpo\.group_size': 1 is out of range; allowed: >= 2"),
    (["method.grpo.clip_range=0"], r"method\.grpo\.clip_range': 0\.0 is out of range; allowed: > 0"),
    (["method.grpo.clip_range=-0.1"], r"clip_range': -0.1 is out of range"),
    (["method.grpo.adv_clip_max=0"], r"adv_clip_max': 0\.0 is out of range"),
    (["method.grpo.kl_beta=-1"], r"kl_beta': -1\.0 is out of range"),
    (["method.grpo.inner_epochs=0"], r"inner_epochs': 0 is out of range"),
    (["method.grpo.timestep_fraction=0"], r"timestep_fraction': 0\.0 is out of range"),
    (["method.grpo.timestep_fraction=1.5"], r"timestep_fraction': 1.5 is out of range"),
    (["method.grpo.num_steps=4", "method.grpo.timestep_fraction=0.2"], "trains no transition"),
    (["method.grpo.sde_window_size=20", "method.grpo.num_steps=10"], "sde_window_size \\(20\\) is more than"),
    (["method.grpo.sde_window_size=3", "method.grpo.sde_window_range=[4,2]"], "sde_window_range"),
    (["method.grpo.noise_level=-0.1"], r"noise_level': -0.1 is out of range"),
    (["method.beta=100"], "does not apply to method 'grpo'"),
])
def test_grpo_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load("toy_online_dpo.yaml", "method.name=grpo", *overrides)


def test_online_method_without_a_reward():
    with pytest.raises(ConfigError, match="method 'online_dpo' learns from a reward: set reward.scorers"):
        load("toy_dpo.yaml", "method.name=online_dpo", "method.beta=5000")


def test_reward_keys_are_errors_for_offline_methods():
    with pytest.raises(ConfigError, match="config key 'reward.scorers' is read by the online methods only"):
        load("toy_dpo.yaml", "reward.scorers={toy: 1.0}")
    load("toy_dpo.yaml", "reward.normalize=none")  # a key left at its default changes nothing


def test_bad_value_stops_the_recipe_before_any_model_loads(monkeypatch, tmp_path):
    import runpy

    import mmalign.diffusion.adapter

    recipe = runpy.run_path(str(REPO / "recipes" / "diffusion.py"))
    loaded = []
    monkeypatch.setattr(mmalign.diffusion.adapter, "load_parts", lambda *a, **k: loaded.append(a))
    with pytest.raises(ConfigError, match="group_size"):
        recipe["main"](["--config", str(CONFIGS / "toy_online_dpo.yaml"), f"output_dir={tmp_path / 'out'}",
                        "method.online_dpo.group_size=1"])
    with pytest.raises(ConfigError, match="unknown reward scorer"):
        recipe["main"](["--config", str(CONFIGS / "toy_online_dpo.yaml"), f"output_dir={tmp_path / 'out'}",
                        "reward.scorers={pickscor: 1.0}"])
    assert loaded == []


@pytest.mark.parametrize(("overrides", "message"), [
    (["reward.checkpoints.toy=/no/such/toy.pt"],
     "config key 'reward.checkpoints.toy' points to a path that does not exist: /no/such/toy.pt"),
    (["reward.scorers={aesthetic: 1.0}"],
     "config key 'reward.checkpoints.aesthetic' is required: the 'aesthetic' scorer card has no default"),
    (["reward.scorer_args.toy.checkpoint=/no/such/toy.pt"],
     "config key 'reward.scorer_args.toy.checkpoint' points to a path that does not exist"),
    (["reward.scorers={aesthetic: 1.0}", "reward.checkpoints.aesthetic=assets/toy/scorer/HPS_toy_compressed.pt",
      "reward.scorer_args.aesthetic.backbone_checkpoint=/no/such/clip"],
     "config key 'reward.scorer_args.aesthetic.backbone_checkpoint' points to a path that does not exist"),
])
def test_missing_reward_checkpoint_stops_the_recipe_before_any_model_loads(monkeypatch, tmp_path, overrides,
                                                                           message):
    """main reported a missing reward checkpoint only after the pipeline had loaded (in the training-set hook)."""
    import runpy

    import mmalign.diffusion.adapter

    recipe = runpy.run_path(str(REPO / "recipes" / "diffusion.py"))
    loaded = []
    monkeypatch.setattr(mmalign.diffusion.adapter, "load_parts", lambda *a, **k: loaded.append(a))
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=message.replace(".", "\\.")):
        recipe["main"](["--config", str(CONFIGS / "toy_grpo.yaml"), f"output_dir={tmp_path / 'out'}", *overrides])
    assert loaded == []
