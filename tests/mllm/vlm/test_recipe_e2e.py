"""Every VLM config runs a few steps end to end on a tiny model; the exported adapter reloads and reproduces
the trained weights' logits; the merged model reproduces the adapter's logits."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from mmalign import checkpoint as ckpt
from mmalign.config import load_config
from mmalign.data.vlm_rows import VLMPreferenceDataset
from mmalign.mllm.export import load_trained
from mmalign.mllm.forward import forward_logits
from mmalign.mllm.model import load_vlm, prepare_policy
from mmalign.mllm.model_config import VLMModelConfig
from mmalign.mllm.vlm.batch import VisionPreferenceCollator
from mmalign.mllm.vlm.config import VLMRecipeConfig
from tests.helpers import REPO

CONFIGS = {"qwen2vl_dpo": "qwen2vl", "qwen25vl_dpo": "qwen25vl", "llava_dpo": "llava", "qwen25vl_mdpo": "qwen25vl",
           "llava_rdpo": "llava", "qwen25vl_simpo": "qwen25vl"}


def _recipe():
    spec = importlib.util.spec_from_file_location("vlm_recipe", REPO / "recipes" / "vlm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logits(model, processor, data):
    rows = [r for r in (VLMPreferenceDataset(data)[i] for i in range(2))]
    batch = VisionPreferenceCollator(processor)(rows)
    with torch.no_grad():
        return forward_logits(model.eval(), batch["pair"], batch["vision"], times=2)


def test_launch_command_heads_every_config():
    for name in CONFIGS:
        first = (REPO / "recipes" / "configs" / "vlm" / f"{name}.yaml").read_text().splitlines()[0]
        assert first == f"# accelerate launch recipes/vlm.py --config recipes/configs/vlm/{name}.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_runs_and_adapter_reproduces_logits(name, tiny_vlm, pairs_jsonl, tmp_path):
    base = tiny_vlm(CONFIGS[name])
    out = tmp_path / "run"
    overrides = [
        f"model.pretrained={base}", f"data.path={pairs_jsonl}", f"output_dir={out}", "train.max_steps=2",
        "train.batch_size=2", "train.grad_accum=1", "train.mixed_precision='no'", "model.dtype=float32",
        "train.checkpoint_every=0", "train.warmup_steps=0", "train.lr=1e-2", "train.progress_bar=false",
        f"export.merge={'true' if name == 'qwen2vl_dpo' else 'false'}",
    ]
    config = REPO / "recipes/configs/vlm" / f"{name}.yaml"
    summary = _recipe().main(["--config", str(config), *overrides])
    lora = load_config(VLMRecipeConfig, config, overrides).lora
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary["history"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["data"]["rows"] == 4 and saved["data"]["skips"]["bad_samples"] == 0

    # The exported peft adapter reproduces the logits of the trained weights (restored from the final checkpoint).
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    reloaded = load_trained(adapter, base=str(base))
    model, processor = load_vlm(VLMModelConfig(pretrained=str(base)))
    trained, _ = prepare_policy(model, VLMModelConfig(pretrained=str(base)), lora, needs_reference=True)
    ckpt.load_trainable(trained, ckpt.latest_checkpoint(out))
    expected = _logits(trained, processor, pairs_jsonl)
    torch.testing.assert_close(_logits(reloaded, processor, pairs_jsonl), expected, atol=0, rtol=0)
    with trained.disable_adapter():  # training moved the adapter away from the base model
        assert (expected - _logits(trained, processor, pairs_jsonl)).abs().max() > 1e-4
    if name == "qwen2vl_dpo":
        from transformers import AutoModelForImageTextToText

        merged = AutoModelForImageTextToText.from_pretrained(out / "merged")
        torch.testing.assert_close(_logits(merged, processor, pairs_jsonl), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_full_finetuning_with_frozen_reference_copy(tiny_vlm, pairs_jsonl, tmp_path):
    base = tiny_vlm("llava")
    out = tmp_path / "full"
    overrides = [
        f"model.pretrained={base}", f"data.path={pairs_jsonl}", f"output_dir={out}", "lora.rank=0",
        "train.max_steps=2", "train.batch_size=2", "train.mixed_precision='no'", "model.dtype=float32",
        "train.checkpoint_every=0", "train.warmup_steps=0", "train.lr=1e-3", "train.progress_bar=false",
    ]
    summary = _recipe().main(["--config", str(REPO / "recipes/configs/vlm/llava_dpo.yaml"), *overrides])
    first, second = summary["history"]
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)  # step 1: policy == frozen reference copy
    assert second["loss"] != pytest.approx(0.693147, abs=1e-4)  # the policy moved, the reference did not
    exported = load_trained(out / "adapter")  # a full model folder (no adapter_config.json)
    assert not hasattr(exported, "peft_config")
    model, processor = load_vlm(VLMModelConfig(pretrained=str(base)))
    trained, _ = prepare_policy(model, VLMModelConfig(pretrained=str(base)),
                                load_config(VLMRecipeConfig, None, ["model.pretrained=x", "data.path=x",
                                                                    "lora.rank=0"]).lora,
                                needs_reference=False)
    ckpt.load_trainable(trained, ckpt.latest_checkpoint(out))
    torch.testing.assert_close(_logits(exported, processor, pairs_jsonl), _logits(trained, processor, pairs_jsonl),
                               atol=0, rtol=0)


def test_export_vlm_merges_an_adapter_folder(make_policy, tiny_vlm, pairs_jsonl, tmp_path):
    from transformers import AutoModelForImageTextToText

    from mmalign.mllm.export import export_vlm, save_trained

    policy, processor = make_policy("qwen25vl")
    save_trained(policy, processor, tmp_path / "run" / "adapter")
    copied = export_vlm(tmp_path / "run", tmp_path / "copy", merge=False)
    merged = export_vlm(tmp_path / "run", tmp_path / "merged", merge=True, base=str(tiny_vlm("qwen25vl")))
    expected = _logits(policy, processor, pairs_jsonl)
    torch.testing.assert_close(_logits(load_trained(copied, base=str(tiny_vlm("qwen25vl"))), processor, pairs_jsonl),
                               expected, atol=0, rtol=0)
    torch.testing.assert_close(_logits(AutoModelForImageTextToText.from_pretrained(merged), processor, pairs_jsonl),
                               expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="neither a peft adapter"):
        export_vlm(tmp_path, tmp_path / "x", merge=True)


@pytest.mark.parametrize("override,key", [("method.loss_type=dpo", "method.loss_type"), ("method.name=vdpo", "method.name"),
                                          ("method.beta_mode=per_sample method.loss_type=simpo", "method.beta_mode")])
def test_bad_method_names_fail_before_loading(override, key, tmp_path, pairs_jsonl):
    from mmalign.config import ConfigError

    args = ["--config", str(REPO / "recipes/configs/vlm/qwen2vl_dpo.yaml"), f"model.pretrained={tmp_path}",
            f"data.path={pairs_jsonl}", *override.split()]
    with pytest.raises(ConfigError, match=key):
        _recipe().main(args)


def test_mmalign_export_cli_merges_a_vlm_adapter(make_policy, tiny_vlm, pairs_jsonl, tmp_path):
    """`mmalign export <run> --merge --out` routes peft adapters to the VLM export and reproduces the logits."""
    from transformers import AutoModelForImageTextToText

    from mmalign.cli import main
    from mmalign.mllm.export import save_trained

    policy, processor = make_policy("qwen25vl")
    save_trained(policy, processor, tmp_path / "run" / "adapter")
    out = tmp_path / "merged_cli"
    assert main(["export", str(tmp_path / "run"), "--merge", "--out", str(out), "--base",
                 str(tiny_vlm("qwen25vl"))]) == 0
    torch.testing.assert_close(_logits(AutoModelForImageTextToText.from_pretrained(out), processor, pairs_jsonl),
                               _logits(policy, processor, pairs_jsonl), atol=1e-5, rtol=1e-5)
