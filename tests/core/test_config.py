"""Typed configs (issue 2, item 5): YAML + ``key=value`` / ``--key value`` overrides onto nested dataclasses;
unknown keys, wrong types and missing paths fail with a message naming the key, before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest

from mmalign.config import MISSING, ConfigError, load_config, parse_overrides, require_paths, to_dict
from mmalign.train_config import TrainConfig


@dataclass
class ModelSection:
    pretrained: str = MISSING
    """Local folder or hub id."""
    lora_rank: int = 4
    """LoRA rank."""


@dataclass
class MethodSection:
    beta: float = 5000.0
    """DPO beta."""
    kind: str = "sigmoid"
    """Loss kind."""


@dataclass
class RecipeConfig:
    model: ModelSection = field(default_factory=ModelSection)
    method: MethodSection = field(default_factory=MethodSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/x"
    """Where to write."""


def _yaml(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
    # accelerate launch recipes/diffusion.py --config recipe.yaml
    model:
      pretrained: assets/toy
    method:
      beta: 2500
    train:
      max_steps: 7
      grad_accum: 2
"""


def test_yaml_and_both_override_styles_fill_nested_dataclasses(tmp_path):
    cfg = load_config(RecipeConfig, _yaml(tmp_path, GOOD),
                      ["train.lr=3e-4", "--method.kind", "ipo", "--model.lora_rank=16", "train.resume=latest"])
    assert isinstance(cfg, RecipeConfig) and isinstance(cfg.train, TrainConfig)
    assert isinstance(cfg.model, ModelSection) and isinstance(cfg.method, MethodSection)
    assert cfg.model.pretrained == "assets/toy" and cfg.model.lora_rank == 16
    assert cfg.method.beta == 2500.0 and isinstance(cfg.method.beta, float) and cfg.method.kind == "ipo"
    assert cfg.train.max_steps == 7 and cfg.train.grad_accum == 2 and cfg.train.lr == 3e-4
    assert cfg.train.resume == "latest" and cfg.train.batch_size == 1  # default kept
    assert json.loads(json.dumps(to_dict(cfg)))["train"]["max_steps"] == 7
    # Overrides alone (no file) work too, and the later override wins.
    cfg = load_config(RecipeConfig, None, ["model.pretrained=a/b", "train.max_steps=1", "train.max_steps=2"])
    assert cfg.model.pretrained == "a/b" and cfg.train.max_steps == 2


def test_parse_overrides_normalises_all_forms():
    assert parse_overrides(["a.b=1", "--c.d", "x y", "--e=f=g"]) == ["a.b=1", "c.d=x y", "e=f=g"]
    with pytest.raises(ConfigError, match="'--a.b' has no value"):
        parse_overrides(["--a.b"])
    with pytest.raises(ConfigError, match="'train.max_steps' is not of the form key=value"):
        parse_overrides(["train.max_steps"])


@pytest.mark.parametrize("text, key", [
    ("model: {pretrained: a, lora_rnak: 8}\n", "model.lora_rnak"),
    ("model: {pretrained: a}\ntrian: {max_steps: 3}\n", "trian"),
    ("model: {pretrained: a}\ntrain: {max_step: 3}\n", "train.max_step"),
])
def test_unknown_yaml_key_names_it_and_lists_valid_names(tmp_path, text, key):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(RecipeConfig, path)
    msg = str(err.value)
    assert f"unknown config key '{key}'" in msg and str(path) in msg
    section = {"model.lora_rnak": ModelSection, "trian": RecipeConfig, "train.max_step": TrainConfig}[key]
    from dataclasses import fields

    assert all(f.name in msg for f in fields(section)), msg


def test_unknown_override_key_names_it_and_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_stepz'; valid keys here: .*max_steps"):
        load_config(RecipeConfig, _yaml(tmp_path, GOOD), ["train.max_stepz=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'methd'; valid keys here: method, model, "):
        load_config(RecipeConfig, _yaml(tmp_path, GOOD), ["--methd.beta", "1"])


@pytest.mark.parametrize("overrides, key", [
    (["train.max_steps=abc"], "train.max_steps"),
    (["--train.lr", "fast"], "train.lr"),
    (["train.progress_bar=maybe"], "train.progress_bar"),
    (["method.beta=[1,2]"], "method.beta"),
])
def test_wrong_type_override_names_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=rf"command line: bad value for config key '{key}'"):
        load_config(RecipeConfig, _yaml(tmp_path, GOOD), overrides)


def test_wrong_type_or_shape_in_yaml_names_the_key(tmp_path):
    path = _yaml(tmp_path, "model: {pretrained: a}\ntrain: {max_steps: abc}\n")
    with pytest.raises(ConfigError, match=rf"{path}: bad value for config key 'train.max_steps'"):
        load_config(RecipeConfig, path)
    path = _yaml(tmp_path, "model: {pretrained: a}\ntrain: 5\n")
    with pytest.raises(ConfigError, match=r"config key 'train' is a section and needs a mapping"):
        load_config(RecipeConfig, path)
    with pytest.raises(ConfigError, match=r"config key 'train' is a section; override its fields"):
        load_config(RecipeConfig, _yaml(tmp_path, GOOD), ["train=5"])


def test_repeated_key_missing_value_bad_yaml_and_missing_file(tmp_path):
    path = _yaml(tmp_path, "model:\n  pretrained: a\n  pretrained: b\n")
    with pytest.raises(ConfigError, match=r"line 3: config key 'pretrained' is repeated"):
        load_config(RecipeConfig, path)
    with pytest.raises(ConfigError, match=r"missing required config value 'model.pretrained'"):
        load_config(RecipeConfig, _yaml(tmp_path, "train: {max_steps: 3}\n"))
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(RecipeConfig, _yaml(tmp_path, "model: {pretrained: a\n"))
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        load_config(RecipeConfig, tmp_path / "nope.yaml")


def test_require_paths_names_the_key(tmp_path):
    (tmp_path / "weights").mkdir()
    require_paths(**{"model.pretrained": str(tmp_path / "weights"), "model.hub": "org/name"})
    with pytest.raises(ConfigError, match=r"config key 'data.path' points to a path that does not exist: .*missing"):
        require_paths(**{"model.pretrained": str(tmp_path / "weights"), "data.path": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=r"config key 'data.path' is required but empty"):
        require_paths(**{"data.path": ""})


def test_bad_config_fails_before_torch_or_any_model_library_is_imported(tmp_path):
    """The recipe order is config → require_paths → models; the config layer itself imports no torch."""
    path = _yaml(tmp_path, "model: {pretrained: a}\ntrain: {max_steps: abc}\n")
    code = textwrap.dedent(f"""
        import sys
        from dataclasses import dataclass, field
        from mmalign.config import ConfigError, load_config, require_paths

        @dataclass
        class Train:
            max_steps: int = 1

        @dataclass
        class Cfg:
            train: Train = field(default_factory=Train)
            model: dict = field(default_factory=dict)

        errors = []
        for attempt in (lambda: load_config(Cfg, {str(path)!r}),
                        lambda: load_config(Cfg, None, ["train.max_stepz=1"]),
                        lambda: require_paths(**{{"model.pretrained": {str(tmp_path / "absent")!r}}})):
            try:
                attempt()
            except ConfigError as exc:
                errors.append(str(exc))
        heavy = sorted(m for m in ("torch", "transformers", "diffusers", "open_clip") if m in sys.modules)
        print(len(errors), heavy)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3 []"


def test_bare_no_for_mixed_precision_and_bad_value_named():
    """`train.mixed_precision=no` (a YAML 1.1 boolean) means "no"; an unknown precision names the key."""
    from dataclasses import dataclass, field

    from mmalign.config import ConfigError, load_config
    from mmalign.train_config import TrainConfig

    @dataclass
    class Recipe:
        train: TrainConfig = field(default_factory=TrainConfig)

    assert load_config(Recipe, None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_config(Recipe, None, ["train.mixed_precision=fp8"])


@dataclass
class StageSection:
    name: str = MISSING
    data: str = MISSING
    lr: float | None = None


@dataclass
class StagedConfig:
    stages: list[StageSection] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


STAGED = """\
    stages:
      - {name: a, data: a.jsonl}
      - {name: b, data: b.jsonl, lr: 1.0e-4}
    prompts: [x, y]
"""


def test_list_entries_are_overridable(tmp_path):
    """Issue 14 item 4: `stages.0.data=<file>` raised an uncaught 'Cannot merge incompatible container types'."""
    cfg = load_config(StagedConfig, _yaml(tmp_path, STAGED),
                      ["stages.0.data=/d/new.jsonl", "stages.1.lr=3e-4", "prompts=[p, q, r]", "prompts.2=s"])
    assert [s.data for s in cfg.stages] == ["/d/new.jsonl", "b.jsonl"] and isinstance(cfg.stages[0], StageSection)
    assert cfg.stages[1].lr == 3e-4 and cfg.stages[0].lr is None and cfg.prompts == ["p", "q", "s"]


@pytest.mark.parametrize("override,message", [
    ("stages.2.data=x", r"'stages.2': 'stages' is a list of 2 entries \(indices 0..1\)"),
    ("stages.first.data=x", r"'stages.first': 'stages' is a list of 2 entries"),
    ("stages.0.nope=1", r"unknown config key 'stages.0.nope'; valid keys here: data, lr, name"),
    ("stages.0=x", r"config key 'stages.0' is a section"),
    ("stages.1.lr=fast", r"bad value for config key 'stages\[1\].lr'"),
    ("prompts.5=z", r"'prompts' is a list of 2 entries"),
])
def test_bad_list_overrides_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(StagedConfig, _yaml(tmp_path, STAGED), [override])


def test_missing_optimizer_extra_is_a_config_error_before_any_model_loads(monkeypatch):
    """sdxl_mapo_full.yaml uses adamw_8bit: without bitsandbytes the error came from build_optimizer, after the
    SDXL pipeline had loaded and the cache was built."""
    import importlib.util

    from mmalign.diffusion.config import DiffusionRecipeConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.optimizer=adamw_8bit needs the optional extra: pip install 'mmalign\[bnb\]'"):
        load_config(DiffusionRecipeConfig, "recipes/configs/diffusion/sdxl_mapo_full.yaml")
