"""Every shipped video config runs end to end (a step or a stage each) on a tiny random model of its architecture
(Qwen-VL; LLaVA-OneVision for LLaVA-Video) and toy clips."""

import json
import runpy
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers import REPO

main = runpy.run_path(str(REPO / "recipes" / "video.py"))["main"]

TOY = REPO / "assets" / "videos" / "toy"
SMALL = ["model.dtype=float32", 'train.mixed_precision="no"', "train.checkpoint_every=0", "train.grad_accum=1",
         "train.warmup_steps=0", "data.max_length=512", "train.progress_bar=false"]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("video_data")
    rows = [json.loads(x) for x in (TOY / "direction_train.jsonl").read_text().splitlines()][:2]
    other = {"left": "right", "right": "left", "up": "down", "down": "up"}
    rrpo = [{"media_path": str(TOY / r["video"]), "question": "<image>\n" + r["question"],
             "answer": f"It moves {r['answer']}.", "pred": f"It moves {other[r['answer']]}.",
             "answer_masked": f"It moves <MASK>{r['answer']}</MASK>.",
             "pred_masked": f"It moves <MASK>{other[r['answer']]}</MASK>."} for r in rows]
    swift = [{"messages": [{"role": "user", "content": "<video>" + r["question"]},
                           {"role": "assistant", "content": r["answer"]}],
              "rejected_response": other[r["answer"]], "videos": [str(TOY / r["video"])]} for r in rows]
    sft = [{"video": str(TOY / r["video"]), "question": r["question"], "response": r["answer"]} for r in rows]
    return {"rrpo": _write(d / "rrpo.jsonl", rrpo), "dpo": _write(d / "dpo.jsonl", swift),
            "sft": _write(d / "sft.jsonl", sft)}


def _trainable_changed(model_before, model_after):
    after = dict(model_after.named_parameters())
    return any(not torch.equal(p, after[n]) for n, p in model_before.items() if n in after)


@pytest.mark.slow
@pytest.mark.parametrize("name,model,data_key", [
    ("qwen25vl_rrpo", "tiny:qwen25vl", "rrpo"),
    ("llavavideo_rrpo", "tiny:llavaov", "rrpo"),  # llava-hf template: typed content parts only
    ("qwen25vl_vdpo", "tiny:qwen25vl", "sft"),
])
def test_single_stage_configs(name, model, data_key, data, tmp_path):
    out = tmp_path / name
    summary = main(["--config", f"recipes/configs/video/{name}.yaml", f"model.pretrained={model}",
                    f"data.path={data[data_key]}", f"output_dir={out}", "train.max_steps=1", "train.batch_size=2",
                    *SMALL])
    assert summary["steps"] == 1 and summary["skipped_steps"] == 0
    final = summary["final"]
    assert torch.isfinite(torch.tensor(final["loss"]))
    if data_key == "rrpo":
        assert "kl/chosen" in final and final["kl/chosen"] == pytest.approx(0.0, abs=1e-6)  # step 1: ref == policy
    assert (out / "adapter_config.json").is_file() and (out / "summary.json").is_file()
    lora_b = [v for k, v in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)  # zero-initialised B moved in the one step
    if model == "tiny:llavaov":
        assert type(summary["trained_model"]).__name__ == "LlavaOnevisionForConditionalGeneration"


@pytest.mark.slow
def test_temple_schedule_from_one_file(data, tmp_path):
    cfg = yaml.safe_load(Path("recipes/configs/video/qwen25vl_temple.yaml").read_text())
    assert [s["name"] for s in cfg["stages"]] == ["dpo_r16", "dpo_r8", "dpo_r4", "dpo_r2", "sft"]
    for s in cfg["stages"]:
        s["data"] = data["sft"] if s["method"] == "sft" else data["dpo"]
    path = tmp_path / "temple.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    summary = main(["--config", str(path), "model.pretrained=tiny:qwen25vl", f"output_dir={out}",
                    "train.batch_size=2", *SMALL])
    assert [s["stage"] for s in summary["stages"]] == ["dpo_r16", "dpo_r8", "dpo_r4", "dpo_r2", "sft"]
    assert all(s["steps"] == 1 for s in summary["stages"])  # one epoch of 2 pairs at batch 2
    for i, s in enumerate(cfg["stages"]):
        assert (out / f"{i:02d}-{s['name']}" / "adapter" / "adapter_model.safetensors").is_file()
    first = summary["stages"][0]["final"]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6) and "sft_loss" in first  # fresh reference


@pytest.mark.slow
def test_tiny_placeholder_is_a_saved_folder_trained_in_the_configs_dtype(data, tmp_path):
    """``tiny:<family>`` means what it means in diffusion: a folder under ``<output_dir>/tiny_inputs`` loaded with
    ``from_pretrained``, so a bf16 config trains bf16 weights (built in-process it stayed fp32 whatever the YAML
    said, and the shipped bf16 video configs were never run in bf16)."""
    out = tmp_path / "bf16"
    summary = main(["--config", "recipes/configs/video/qwen25vl_rrpo.yaml", "model.pretrained=tiny:qwen25vl",
                    f"data.path={data['rrpo']}", f"output_dir={out}", "train.max_steps=1", "train.batch_size=2",
                    *SMALL, "model.dtype=bfloat16"])
    assert (out / "tiny_inputs" / "model_qwen25vl" / "config.json").is_file()
    assert {p.dtype for p in summary["trained_model"].parameters()} == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(summary["final"]["loss"]))
