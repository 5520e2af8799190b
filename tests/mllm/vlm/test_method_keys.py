"""Issue 23: a ``method.*`` key the chosen VLM method does not read is a ConfigError naming the key and the method
(main accepted mDPO's crop / anchor keys and rDPO's scoring switch on plain DPO and trained without them); mDPO's
and rDPO's own options are the sections ``method.mdpo.*`` / ``method.rdpo.*`` (as diffusion's ``method.mapo.*``),
and the old flat spellings load with a deprecation note naming the new key."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import yaml

from mmalign.config import ConfigError, load_config
from mmalign.mllm.forward import score_rows
from mmalign.mllm.vlm.batch import VisionPreferenceCollator
from mmalign.mllm.vlm.config import VLMRecipeConfig
from mmalign.mllm.vlm.methods import SHARED_KEYS, SPECS, VLMMethodConfig
from mmalign.mllm.vlm.objective import METHODS, preference_step
from tests.helpers import REPO

CONFIGS = REPO / "recipes" / "configs" / "vlm"


@pytest.mark.parametrize("config,override,method", [
    ("qwen2vl_dpo.yaml", "method.anchor_delta=0.1", "dpo"),  # old flat spellings: for the wrong method an error
    ("qwen2vl_dpo.yaml", "method.crop_scale_min=0.05", "dpo"),
    ("qwen2vl_dpo.yaml", "method.rdpo_noisy=true", "dpo"),
    ("qwen25vl_mdpo.yaml", "method.rdpo_noisy=true", "mdpo"),
])
def test_a_key_the_method_does_not_read_is_an_error(config, override, method):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' does not apply to method '{method}'"):
        load_config(VLMRecipeConfig, str(CONFIGS / config), [override])


@pytest.mark.parametrize("config,override,owner,method", [
    ("qwen2vl_dpo.yaml", "method.mdpo.anchor_delta=0.1", "mdpo", "dpo"),
    ("qwen2vl_dpo.yaml", "method.rdpo.noisy=true", "rdpo", "dpo"),
    ("qwen25vl_mdpo.yaml", "method.rdpo.noisy=false", "rdpo", "mdpo"),  # even at its default value
    ("llava_rdpo.yaml", "method.mdpo.crop_scale_max=0.5", "mdpo", "rdpo"),
])
def test_another_methods_section_is_an_error_naming_key_and_method(config, override, owner, method):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' is an option of method '{owner}', but method.name is '{method}'"):
        load_config(VLMRecipeConfig, str(CONFIGS / config), [override])


def test_a_shipped_config_switched_to_the_method_that_reads_it_loads():
    cfg = load_config(VLMRecipeConfig, str(CONFIGS / "qwen2vl_dpo.yaml"),
                      ["method.name=mdpo", "method.mdpo.anchor_delta=0.1"])
    assert cfg.method.mdpo.anchor_delta == 0.1


@pytest.mark.parametrize("old,new,value", [
    ("anchor_delta", "mdpo.anchor_delta", 0.3), ("crop_scale_min", "mdpo.crop_scale_min", 0.05),
    ("crop_scale_max", "mdpo.crop_scale_max", 0.5),
])
def test_old_flat_mdpo_key_loads_with_a_note_and_the_same_value(tmp_path, capsys, old, new, value):
    path = tmp_path / "old.yaml"
    path.write_text(f"model: {{pretrained: x}}\ndata: {{path: x}}\nmethod: {{name: mdpo, {old}: {value}}}\n")
    cfg = load_config(VLMRecipeConfig, path)
    section, option = new.split(".")
    assert getattr(getattr(cfg.method, section), option) == value
    err = capsys.readouterr().err
    assert f"DEPRECATED: {path}: config key 'method.{old}' is now 'method.{new}'" in err, err
    new_path = tmp_path / "new.yaml"
    new_path.write_text(f"model: {{pretrained: x}}\ndata: {{path: x}}\nmethod: {{name: mdpo, {section}: {{{option}: {value}}}}}\n")
    assert load_config(VLMRecipeConfig, new_path) == cfg
    assert "DEPRECATED" not in capsys.readouterr().err


def test_old_rdpo_noisy_override_loads_with_a_note(capsys):
    cfg = load_config(VLMRecipeConfig, str(CONFIGS / "llava_rdpo.yaml"), ["method.rdpo_noisy=true"])
    assert cfg.method.rdpo.noisy is True
    assert "config key 'method.rdpo_noisy' is now 'method.rdpo.noisy'" in capsys.readouterr().err
    new = load_config(VLMRecipeConfig, str(CONFIGS / "llava_rdpo.yaml"), ["method.rdpo.noisy=true"])
    assert new == cfg


def test_old_and_new_spelling_together_is_an_error(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("model: {pretrained: x}\ndata: {path: x}\n"
                    "method: {name: mdpo, anchor_delta: 0.1, mdpo: {anchor_delta: 0.2}}\n")
    with pytest.raises(ConfigError, match="'method.anchor_delta' \\(deprecated\\) and 'method.mdpo.anchor_delta'"):
        load_config(VLMRecipeConfig, path)


def test_crop_range_is_checked_in_the_section():
    with pytest.raises(ConfigError, match="method.mdpo.*crop_scale_min \\(0.3\\) must be <= crop_scale_max"):
        load_config(VLMRecipeConfig, str(CONFIGS / "qwen25vl_mdpo.yaml"), ["method.mdpo.crop_scale_min=0.3",
                                                                            "method.mdpo.crop_scale_max=0.2"])
    with pytest.raises(ConfigError, match="'method.mdpo.crop_scale_max': 1.5 is out of range"):
        load_config(VLMRecipeConfig, str(CONFIGS / "qwen25vl_mdpo.yaml"), ["method.mdpo.crop_scale_max=1.5"])


def test_the_saved_run_config_holds_only_the_chosen_section_and_loads_again(tmp_path):
    cfg = load_config(VLMRecipeConfig, str(CONFIGS / "qwen25vl_mdpo.yaml"), ["method.mdpo.anchor_delta=0.25"])
    saved = cfg.as_dict()
    assert "mdpo" in saved["method"] and "rdpo" not in saved["method"]
    path = tmp_path / "mmalign_config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert load_config(VLMRecipeConfig, path) == cfg


def test_one_spec_per_method_of_the_step_table_and_one_field_per_key():
    assert set(SPECS) == set(METHODS)
    sections = {s.name for s in SPECS.values() if s.options is not None}
    names = {f.name for f in dataclasses.fields(VLMMethodConfig)}
    assert names == {"name", *SHARED_KEYS, *sections}
    for name in sections:
        assert VLMMethodConfig.__dataclass_fields__[name].default_factory is SPECS[name].options


def test_the_mdpo_anchor_delta_section_reaches_the_loss(make_policy, vlm_rows):
    """``method.mdpo.anchor_delta`` set in the config moves the mDPO loss by exactly the anchor term's change:
    ``mean(-logsig(beta rho_w - delta)) - mean(-logsig(beta rho_w))`` (spec/vlm_video_objectives.md §5,
    luka-group/mDPO ``mdpo_trainer.py``)."""
    policy, processor = make_policy("qwen25vl")
    path = str(CONFIGS / "qwen25vl_mdpo.yaml")
    base = load_config(VLMRecipeConfig, path).method
    moved = load_config(VLMRecipeConfig, path, ["method.mdpo.anchor_delta=0.7"]).method
    assert (base.mdpo.anchor_delta, moved.mdpo.anchor_delta) == (0.0, 0.7)
    batch = VisionPreferenceCollator(processor, extra="crop", seed=1,
                                     crop_scale=(base.mdpo.crop_scale_min, base.mdpo.crop_scale_max))(vlm_rows)
    with torch.no_grad():
        loss0, m0 = preference_step(policy, batch, base)
        loss1, m1 = preference_step(policy, batch, moved)
        chosen, _ = score_rows(policy, batch["pair"], batch["vision"], times=2)
        with policy.disable_adapter():
            ref_chosen, _ = score_rows(policy, batch["pair"], batch["vision"], times=2)
    n = len(batch["row_ids"])
    rho_w = (chosen[:n] - ref_chosen[:n]).double()
    beta = base.beta
    expected = (-F.logsigmoid(beta * rho_w - 0.7)).mean() - (-F.logsigmoid(beta * rho_w)).mean()
    assert float(expected) > 0.05  # the test can see the change
    assert float(loss1 - loss0) == pytest.approx(float(expected), abs=1e-5)
    assert float(m1["mdpo/anchor_loss"]) == pytest.approx(float((-F.logsigmoid(beta * rho_w - 0.7)).mean()), abs=1e-5)
    assert float(m1["mdpo/conditional_loss"]) == pytest.approx(float(m0["mdpo/conditional_loss"]), abs=1e-6)


def test_the_rdpo_noisy_section_reaches_the_scorer(make_policy, vlm_rows):
    """``method.rdpo.noisy=true`` in the config is the official code's scorer: the loss equals the step built with
    the option directly (itself checked against Re-Align in test_official_parity.py) and differs from the default."""
    from mmalign.mllm.vlm.methods import RdpoOptions

    policy, processor = make_policy("qwen25vl")
    for r in vlm_rows:
        r.extra_image = r.images[0].rotate(90, expand=True)
    batch = VisionPreferenceCollator(processor, extra="row")(vlm_rows)
    path = str(CONFIGS / "llava_rdpo.yaml")
    noisy = load_config(VLMRecipeConfig, path, ["method.rdpo.noisy=true"]).method
    with torch.no_grad():
        loss, _ = preference_step(policy, batch, noisy)
        direct, _ = preference_step(policy, batch, VLMMethodConfig(name="rdpo", beta=noisy.beta,
                                                                   rdpo=RdpoOptions(noisy=True)))
        paper, _ = preference_step(policy, batch, load_config(VLMRecipeConfig, path).method)
    assert float(loss) == float(direct)
    assert abs(float(loss) - float(paper)) > 1e-4
