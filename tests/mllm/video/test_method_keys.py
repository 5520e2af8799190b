"""Issue 23: a ``method.*`` key no video method of the run reads is a ConfigError naming the key and the method
(main accepted e.g. ``method.alpha`` on vdpo, ``method.magnitude`` on rrpo); robust / cdpo / simpo can set their
label smoothing and margin (main had no such keys: they ran with 0). VDPO's and RRPO's own options are the
sections ``method.vdpo.*`` / ``method.rrpo.*`` (as diffusion's ``method.mapo.*``), per stage in a curriculum, and
the old flat spellings load with a deprecation note naming the new key."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import yaml

from mmalign.config import ConfigError, load_config
from mmalign.lora_config import LoraConfig
from mmalign.mllm.video import build
from mmalign.mllm.video.batch import VideoRow, VideoRowCollator
from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.mllm.video.curriculum import StageAdapter, fresh_adapter
from mmalign.mllm.video.methods import SHARED_KEYS, SPECS, MethodConfig
from mmalign.objectives.rrpo import rrpo_defaults
from tests.helpers import REPO, perturb_lora

CONFIGS = REPO / "recipes" / "configs" / "video"
TOY = REPO / "assets" / "videos" / "toy"
HEAD = "output_dir: out\nmodel: {pretrained: tiny:qwen2vl}\n"


def _yaml(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("config,override,method", [
    ("qwen25vl_rrpo.yaml", "method.magnitude=8", "rrpo"),  # old flat spellings: for the wrong method an error
    ("qwen25vl_rrpo.yaml", "method.loss_type=ipo", "rrpo"),
    ("qwen25vl_vdpo.yaml", "method.alpha=0.1", "vdpo"),
    ("qwen25vl_vdpo.yaml", "method.kl_chunk_size=128", "vdpo"),
    ("qwen25vl_temple.yaml", "method.frames_per_clip=4", "dpo"),  # a curriculum: no stage (dpo, sft) reads it
])
def test_a_key_no_method_of_the_run_reads_is_an_error(config, override, method):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' does not apply to method '{method}'"):
        load_config(VideoRecipeConfig, str(CONFIGS / config), [override])


@pytest.mark.parametrize("config,override,owner,method", [
    ("qwen25vl_rrpo.yaml", "method.vdpo.magnitude=8", "vdpo", "rrpo"),
    ("qwen25vl_vdpo.yaml", "method.rrpo.alpha=0.1", "rrpo", "vdpo"),
    ("qwen25vl_vdpo.yaml", "method.rrpo.kl_chunk_size=256", "rrpo", "vdpo"),  # even at its default value
    ("toy_sft.yaml", "method.vdpo.perturbations=[drop]", "vdpo", "sft"),
])
def test_another_methods_section_is_an_error_naming_key_and_method(config, override, owner, method):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' is an option of method '{owner}', but method.name is '{method}'"):
        load_config(VideoRecipeConfig, str(CONFIGS / config), [override])


def test_a_curriculum_refuses_a_section_no_stage_reads():
    with pytest.raises(ConfigError, match=r"'method.rrpo.alpha' is an option of method 'rrpo'.*no stage's method "
                                          r"\(dpo, sft\) reads it"):
        load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_temple.yaml"), ["method.rrpo.alpha=0.1"])


@pytest.mark.parametrize("config,override,message", [
    ("qwen25vl_vdpo.yaml", "method.vdpo.magnitude=0", "'method.vdpo.magnitude': 0 is out of range"),
    ("qwen25vl_vdpo.yaml", "method.vdpo.perturbations=[reverse,rotate]",
     "'method.vdpo.perturbations.1': 'rotate' is not allowed"),
    ("qwen25vl_vdpo.yaml", "method.vdpo.frames_per_clip=0", "'method.vdpo.frames_per_clip': 0 is out of range"),
    ("qwen25vl_rrpo.yaml", "method.rrpo.alpha=-1", "'method.rrpo.alpha': -1.0 is out of range"),
    ("qwen25vl_rrpo.yaml", "method.rrpo.kl_chunk_size=0", "'method.rrpo.kl_chunk_size': 0 is out of range"),
])
def test_section_values_are_range_checked(config, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_config(VideoRecipeConfig, str(CONFIGS / config), [override])


@pytest.mark.parametrize("loss_type", ["robust", "cdpo", "simpo"])
def test_label_smoothing_and_gamma_reach_the_pair_step(monkeypatch, loss_type):
    cfg = load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_vdpo.yaml"),
                      [f"method.loss_type={loss_type}", "method.label_smoothing=0.1", "method.gamma=0.5"])
    seen = {}
    monkeypatch.setattr(build, "make_pair_step", lambda *args, **kwargs: seen.update(kwargs, args=args))
    build.build_step(cfg, "vdpo", None)
    assert seen["label_smoothing"] == 0.1 and seen["gamma"] == 0.5 and seen["args"][1] == loss_type


_STAGES = "stages:\n  - {name: a, method: dpo, data: a.jsonl}\n  - {name: b, method: vdpo, data: b.jsonl}\n"


@pytest.mark.parametrize("text,new_text,old,new,value", [
    ("{name: vdpo, magnitude: 8}", "{name: vdpo, vdpo: {magnitude: 8}}", "magnitude", "vdpo.magnitude", 8),
    ("{name: vdpo, perturbations: [drop]}", "{name: vdpo, vdpo: {perturbations: [drop]}}", "perturbations",
     "vdpo.perturbations", ["drop"]),
    ("{name: vdpo, frames_per_clip: 1}", "{name: vdpo, vdpo: {frames_per_clip: 1}}", "frames_per_clip",
     "vdpo.frames_per_clip", 1),
    ("{name: rrpo, alpha: 0.05}", "{name: rrpo, rrpo: {alpha: 0.05}}", "alpha", "rrpo.alpha", 0.05),
    ("{name: rrpo, kl_chunk_size: 64}", "{name: rrpo, rrpo: {kl_chunk_size: 64}}", "kl_chunk_size",
     "rrpo.kl_chunk_size", 64),
    ("{magnitude: 2}\n" + _STAGES, "{vdpo: {magnitude: 2}}\n" + _STAGES, "magnitude", "vdpo.magnitude", 2),
], ids=["vdpo-magnitude", "vdpo-perturbations", "vdpo-frames_per_clip", "rrpo-alpha", "rrpo-kl_chunk_size",
        "curriculum-stage-that-reads-it"])
def test_old_flat_key_loads_with_a_note_and_the_same_value(tmp_path, capsys, text, new_text, old, new, value):
    cfg = load_config(VideoRecipeConfig, _yaml(tmp_path, HEAD + f"method: {text}\n"))
    section, option = new.split(".")
    assert getattr(getattr(cfg.method, section), option) == value
    err = capsys.readouterr().err
    assert f"config key 'method.{old}' is now 'method.{new}'" in err, err
    assert load_config(VideoRecipeConfig, _yaml(tmp_path, HEAD + f"method: {new_text}\n", "new.yaml")) == cfg
    assert "DEPRECATED" not in capsys.readouterr().err


def test_old_flat_override_loads_with_a_note(capsys):
    cfg = load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_rrpo.yaml"), ["method.alpha=0.05"])
    assert cfg.method.rrpo.alpha == 0.05
    assert "DEPRECATED: command line: config key 'method.alpha' is now 'method.rrpo.alpha'" in capsys.readouterr().err
    assert cfg == load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_rrpo.yaml"), ["method.rrpo.alpha=0.05"])


def test_one_spec_per_method_and_one_field_per_key():
    assert all(callable(s.hook("step")) and callable(s.hook("item")) for s in SPECS.values())
    sections = {s.name for s in SPECS.values() if s.options is not None}
    assert sections == {"vdpo", "rrpo"}
    assert {f.name for f in dataclasses.fields(MethodConfig)} == {"name", *SHARED_KEYS, *sections}
    for name in sections:
        assert MethodConfig.__dataclass_fields__[name].default_factory is SPECS[name].options


def _curriculum(tmp_path):
    text = (HEAD + "method: {beta: 0.2, vdpo: {perturbations: [reverse], magnitude: 16, frames_per_clip: 2}, "
            "rrpo: {alpha: 0.02, kl_chunk_size: 64}}\n"
            "stages:\n  - {name: v, method: vdpo, data: v.jsonl}\n  - {name: r, method: rrpo, data: r.jsonl}\n")
    return _yaml(tmp_path, text)


def test_a_curriculum_reads_each_stages_section(tmp_path, monkeypatch, tiny_qwen2vl):
    """Stages vdpo then rrpo: ``method.vdpo.*`` perturbs the vdpo stage's rejected video, ``method.rrpo.*`` reaches
    the rrpo stage's step; the saved run config keeps both sections (and no other) and loads again."""
    cfg = load_config(VideoRecipeConfig, _curriculum(tmp_path))
    rows = tmp_path / "v.jsonl"
    rows.write_text(json.dumps({"video": str(TOY / "right_000.mp4"), "question": "q", "response": "right"}) + "\n")
    cfg.video = dataclasses.replace(cfg.video, num_frames=8, max_frames=8)
    _, processor = tiny_qwen2vl
    clean, perturbed = build.build_dataset(cfg, "vdpo", str(rows), processor)[0]
    assert np.array_equal(perturbed.frames, clean.frames[[6, 7, 4, 5, 2, 3, 0, 1]])  # reverse, magnitude 16, clips 2
    seen = {}
    monkeypatch.setattr(build, "make_rrpo_step", lambda *args: seen.update(args=args))
    build.build_step(cfg, "rrpo", None)
    assert seen["args"] == (0.2, 0.02, None, 64)
    saved = cfg.as_dict()
    assert set(saved["method"]) == {"name", "beta", "loss_type", "sft_weight", "label_smoothing", "gamma",
                                    "vdpo", "rrpo"}
    path = _yaml(tmp_path, yaml.safe_dump(saved), "saved.yaml")
    assert load_config(VideoRecipeConfig, path) == cfg


def test_a_single_run_saves_only_its_own_section(tmp_path):
    cfg = load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_rrpo.yaml"), ["output_dir=o"])
    saved = cfg.as_dict()
    assert set(saved["method"]) == {"name", "beta", "rrpo"}  # RRPO reads beta only of the shared keys
    sft = load_config(VideoRecipeConfig, str(CONFIGS / "toy_sft.yaml")).as_dict()
    assert set(sft["method"]) == {"name"}
    path = _yaml(tmp_path, yaml.safe_dump(saved), "saved.yaml")
    assert load_config(VideoRecipeConfig, path) == cfg


def test_rrpo_alpha_section_reaches_the_loss(tiny_llavaov, toy_clips):
    """``method.rrpo.alpha`` moves the RRPO loss by exactly ``delta alpha * mean KL(ref || policy)`` of the chosen
    rows (spec/vlm_video_objectives.md §2: ``L = -logsig(u) + alpha D``); a null alpha is the per-model default."""
    model, proc = tiny_llavaov
    frames, q, _ = toy_clips["train"][1]
    tok = proc.tokenizer
    chosen, rejected = "It moves left.", "It moves up."
    n_c, n_r = (len(tok(t, add_special_tokens=False)["input_ids"]) for t in (chosen, rejected))
    batch = VideoRowCollator(proc)([(VideoRow(frames, q, chosen, [0] * (n_c - 2) + [1, 0]),
                                     VideoRow(frames, q, rejected, [0] * (n_r - 2) + [1, 0]))])
    policy = fresh_adapter(copy.deepcopy(model), StageAdapter(LoraConfig(rank=4, alpha=8), seed=0))
    perturb_lora(policy, scale=0.05, seed=1)  # policy != reference: KL > 0
    path = str(CONFIGS / "llavavideo_rrpo.yaml")
    low = load_config(VideoRecipeConfig, path, ["output_dir=o"])
    high = load_config(VideoRecipeConfig, path, ["output_dir=o", "method.rrpo.alpha=0.5"])
    assert (low.method.rrpo.alpha, high.method.rrpo.alpha) == (0.01, 0.5)
    import torch

    with torch.no_grad():
        loss_low, m_low = build.build_step(low, "rrpo", None)(policy, batch)
        loss_high, m_high = build.build_step(high, "rrpo", None)(policy, batch)
    kl = float(m_low["kl/chosen"])
    assert kl > 1e-4 and float(m_high["kl/chosen"]) == pytest.approx(kl, rel=1e-6)
    assert float(loss_high - loss_low) == pytest.approx((0.5 - 0.01) * kl, rel=1e-4, abs=1e-7)
    default = load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_rrpo.yaml"), ["output_dir=o",
                                                                                  "model.family=longvu"])
    assert default.method.rrpo.alpha is None
    with torch.no_grad():
        loss_default, _ = build.build_step(default, "rrpo", None)(policy, batch)
        expected = rrpo_defaults("longvu")
        explicit = load_config(VideoRecipeConfig, str(CONFIGS / "qwen25vl_rrpo.yaml"), [
            "output_dir=o", f"method.beta={expected['beta']}", f"method.rrpo.alpha={expected['alpha']}"])
        loss_explicit, _ = build.build_step(explicit, "rrpo", None)(policy, batch)
    assert float(loss_default) == float(loss_explicit)
