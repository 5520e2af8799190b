"""The diffusion method registry (mmalign/diffusion/registry.py): one entry per method, the single source of
names, data kinds, options and hooks; options that the chosen method does not read are a ConfigError before any
model loads; the pre-registry flat keys still load, with a deprecation note naming the new key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.diffusion.registry import DEFAULT_HOOKS, METHODS, REGISTRY, MethodConfig, option_sections
from tests.helpers import REPO, switched_config

CONFIGS = REPO / "recipes" / "configs" / "diffusion"
TOY = str(CONFIGS / "toy_dpo.yaml")


def test_every_entry_is_complete_and_its_hooks_import():
    fields = {f.name: f for f in dataclasses.fields(MethodConfig)}
    for name, spec in REGISTRY.items():
        assert spec.data in ("pairs", "ranked", "unpaired", "prompts")
        if spec.options is not None:  # its options section is a typed field of MethodConfig
            assert fields[name].default_factory().__class__ is spec.options
        for hook in ("step", *DEFAULT_HOOKS, "prepare"):
            if hook != "prepare" or spec.prepare:
                assert callable(spec.hook(hook)), (name, hook)
    assert set(option_sections()) <= set(METHODS)


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.noise.provider=ddim"], "'method.noise.provider' does not apply to method 'dpo'.*method.smpo.noise"),
    (["method.name=kto", "method.loss_type=hinge"], "'method.loss_type' does not apply to method 'kto'.*method.dpo"),
    (["method.kto.lambda_desirable=2"], "'method.kto.lambda_desirable' is an option of method 'kto'.*'dpo'"),
    (["method.inpo.noise.provider=renoise"], "'method.inpo.noise.provider' is an option of method 'inpo'"),
    (["method.name=sft", "method.beta=100"], "'method.beta' does not apply to method 'sft'"),
    (["method.name=ppd"], "'lora.rank' does not apply to method 'ppd'"),  # toy_dpo.yaml's lora block
    (["method.name=ppo"], "method.name"),
])
def test_an_option_the_method_does_not_read_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DiffusionRecipeConfig, TOY, overrides)


def test_the_check_runs_before_any_model_loads(tmp_path):
    """Through the recipe's entry point: exit code 2 and the one-line message, without importing diffusers."""
    code = ("import sys; from mmalign.recipe_entry import run_recipe; import runpy; "
            "mod = runpy.run_path('recipes/diffusion.py', run_name='x'); "
            f"rc = run_recipe(mod['main'], ['--config', {TOY!r}, 'method.noise.provider=ddim', "
            f"'output_dir={tmp_path}']); "
            "print('DIFFUSERS_LOADED' if 'diffusers.models' in sys.modules else 'NO_MODEL'); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert run.returncode == 2, run.stderr
    assert "'method.noise.provider' does not apply to method 'dpo'" in run.stderr
    assert "NO_MODEL" in run.stdout


@pytest.mark.parametrize(("config", "name", "message"), [
    ("sd15_dpo.yaml", "mapo", "'method.beta' does not apply to method 'mapo'; set 'method.mapo.beta'"),
    ("sd15_dpo.yaml", "kto", "'method.beta' does not apply to method 'kto'; set 'method.kto.beta'"),
    ("toy_dpo.yaml", "sft", "'method.beta' does not apply to method 'sft' .read by: dpo"),
])
def test_beta_is_the_preference_temperature_only(config, name, message):
    """Issue 23: ``method.beta`` is the DPO temperature (5000 in sd15_dpo.yaml); MaPO's margin weight and KTO's
    weight are their own keys. On main, ``sd15_dpo.yaml method.name=mapo`` loaded and trained MaPO at 5000."""
    with pytest.raises(ConfigError, match=message):
        load_config(DiffusionRecipeConfig, str(CONFIGS / config), [f"method.name={name}"])


def test_mapo_and_kto_weights_default_to_the_official_values(tmp_path):
    """MaPO ``--beta_mapo`` 0.1 (mapo-t2i/mapo argparse), Diffusion-KTO ``--beta_dpo`` 1000 (jacklishufan/
    diffusion-kto ``train_kto_sd_v1.5.py`` argparse); the shipped YAMLs spell them in the method's section."""
    assert MethodConfig().mapo.beta == 0.1 and MethodConfig().kto.beta == 1000.0
    assert load_config(DiffusionRecipeConfig, str(CONFIGS / "sdxl_mapo.yaml")).method.mapo.beta == 0.1
    assert load_config(DiffusionRecipeConfig, str(CONFIGS / "sd15_kto.yaml")).method.kto.beta == 1000.0
    switched = load_config(DiffusionRecipeConfig, switched_config("sd15_dpo.yaml", "mapo", tmp_path))
    assert switched.method.name == "mapo" and switched.method.mapo.beta == 0.1


@pytest.mark.parametrize("name,value", [("mapo", 0.05), ("kto", 500.0)])
def test_old_beta_of_a_mapo_or_kto_yaml_migrates_with_a_note(tmp_path, capsys, name, value):
    path = tmp_path / "old.yaml"
    path.write_text(f"model:\n  pretrained: x\ndata:\n  path: y\nmethod:\n  name: {name}\n  beta: {value}\n")
    cfg = load_config(DiffusionRecipeConfig, str(path))
    assert getattr(cfg.method, name).beta == value
    assert f"config key 'method.beta' is now 'method.{name}.beta'" in capsys.readouterr().err


def test_ppd_ignores_the_lora_block():
    """PPD trains the user branch only: a ``lora.*`` key is an error (on main it was silently ignored)."""
    with pytest.raises(ConfigError, match="'lora.rank' does not apply to method 'ppd'.*'lora:' block"):
        load_config(DiffusionRecipeConfig, str(CONFIGS / "toy_ppd.yaml"), ["lora.rank=8"])


def test_ppd_reads_no_timestep_weight():
    with pytest.raises(ConfigError, match="'method.timestep_weight' does not apply to method 'ppd'"):
        load_config(DiffusionRecipeConfig, str(CONFIGS / "toy_ppd.yaml"), ["method.timestep_weight=snr_inverse"])


def test_keys_of_another_section_are_errors_even_at_their_default():
    with pytest.raises(ConfigError, match="'method.dpo.loss_type' is an option of method 'dpo'"):
        load_config(DiffusionRecipeConfig, TOY, ["method.name=inpo", "method.dpo.loss_type=sigmoid"])


@pytest.mark.parametrize(("old", "new", "value", "name"), [
    ("method.loss_type", ("dpo", "loss_type"), "hinge", "dpo"),
    ("method.loss_type", ("dcpo", "loss_type"), "ipo", "dcpo"),
    ("method.mapo_snr", ("mapo", "snr"), 0.25, "mapo"),
    ("method.rank_source", ("rankdpo", "rank_source"), "label", "rankdpo"),
    ("method.kto_lambda_desirable", ("kto", "lambda_desirable"), 2.0, "kto"),
    ("method.kto_lambda_undesirable", ("kto", "lambda_undesirable"), 0.5, "kto"),
    ("method.kto_positive_ratio", ("kto", "positive_ratio"), 0.7, "kto"),
    ("method.noise.inversion_steps", ("inpo", "noise", "inversion_steps"), 4, "inpo"),
    ("method.noise.provider", ("smpo", "noise", "provider"), "ddim", "smpo"),
])
def test_pre_registry_keys_load_with_a_deprecation_note(tmp_path, capsys, old, new, value, name):
    def read(cfg):
        node = cfg.method
        for part in new:
            node = getattr(node, part)
        return node

    # on the command line, in either order with method.name
    bare = tmp_path / "bare.yaml"  # a YAML that sets no method key (toy_dpo.yaml's beta is DPO's)
    bare.write_text("model:\n  pretrained: x\ndata:\n  path: y\n")
    cfg = load_config(DiffusionRecipeConfig, str(bare), [f"{old}={value}", f"method.name={name}"])
    assert read(cfg) == value
    assert f"config key '{old}' is now 'method.{'.'.join(new)}'" in capsys.readouterr().err
    # in a user's YAML
    *parents, leaf = old.split(".")[1:]
    block = f"  {parents[0]}:\n    {leaf}: {value}\n" if parents else f"  {leaf}: {value}\n"
    path = tmp_path / "old.yaml"
    path.write_text(f"model:\n  pretrained: x\ndata:\n  path: y\nmethod:\n  name: {name}\n{block}")
    cfg = load_config(DiffusionRecipeConfig, str(path))
    assert read(cfg) == value
    assert f"{path}: config key '{old}' is now" in capsys.readouterr().err


def test_old_and_new_key_together_is_an_error(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("model:\n  pretrained: x\ndata:\n  path: y\nmethod:\n  name: dpo\n  loss_type: hinge\n"
                    "  dpo:\n    loss_type: ipo\n")
    with pytest.raises(ConfigError, match="'method.loss_type' .deprecated. and 'method.dpo.loss_type' are both set"):
        load_config(DiffusionRecipeConfig, str(path))


def test_saved_run_config_keeps_only_the_chosen_section_and_reloads(tmp_path):
    from mmalign.run_config import save_run_config

    cfg = load_config(DiffusionRecipeConfig, str(CONFIGS / "sd15_kto.yaml"))
    path = save_run_config(cfg, tmp_path)
    text = path.read_text()
    assert "  kto:\n" in text and "  smpo:\n" not in text and "  dpo:\n" not in text
    again = load_config(DiffusionRecipeConfig, str(path))
    assert again.method == cfg.method
    for config in ("sdxl_mapo.yaml", "toy_ppd.yaml"):  # without the unread method.beta / the ignored lora block
        cfg = load_config(DiffusionRecipeConfig, str(CONFIGS / config))
        again = load_config(DiffusionRecipeConfig, str(save_run_config(cfg, tmp_path / config)))
        assert again.method == cfg.method


def test_config_schema_imports_without_torch():
    run = subprocess.run([sys.executable, "-c", "import sys, mmalign.diffusion.registry; "
                          "print(sorted(m for m in ('torch', 'diffusers', 'accelerate') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
