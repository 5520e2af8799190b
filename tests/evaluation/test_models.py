"""What ``mmalign evaluate`` compares, resolved from folders before any model loads."""

from __future__ import annotations

import pytest
import yaml

from mmalign.evaluation.models import LORA_WEIGHT_NAME, RUN_CONFIG, resolve_models


def _pipeline(path):
    path.mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    return path


def _run(path, pretrained, revision=None):
    path.mkdir(parents=True)
    (path / RUN_CONFIG).write_text(yaml.safe_dump({"model": {"pretrained": str(pretrained), "revision": revision},
                                                   "lora": {"rank": 8}}))
    return path


def test_run_folder_with_lora_takes_the_recorded_base(tmp_path):
    base = _pipeline(tmp_path / "base")
    run = _run(tmp_path / "run", base, revision="abc")
    (run / LORA_WEIGHT_NAME).write_bytes(b"")
    plan = resolve_models(str(run), None)
    assert (plan.kind, plan.base, plan.lora, plan.base_revision) == ("lora", str(base), str(run), "abc")
    other = _pipeline(tmp_path / "other")
    assert resolve_models(str(run), str(other)).base == str(other)  # --base wins (and drops the revision)
    assert resolve_models(str(run), str(other)).base_revision is None


def test_full_finetune_run_is_a_pipeline_and_a_hub_base_is_accepted(tmp_path):
    run = _pipeline(tmp_path / "run")
    (run / RUN_CONFIG).write_text(yaml.safe_dump({"model": {"pretrained": "stabilityai/sdxl-base"}}))
    plan = resolve_models(str(run), None)
    assert plan.kind == "pipeline" and plan.base == "stabilityai/sdxl-base" and plan.lora is None


def test_lora_file_and_folder(tmp_path):
    base = _pipeline(tmp_path / "base")
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "my_lora.safetensors").write_bytes(b"")
    plan = resolve_models(str(lora / "my_lora.safetensors"), str(base))
    assert plan.kind == "lora" and plan.lora == str(lora) and plan.lora_weight_name == "my_lora.safetensors"


@pytest.mark.parametrize("case, match", [
    ("unexported_run", r"a run folder without an exported model .* mmalign export"),
    ("no_base", r"--base is required"),
    ("base_not_pipeline", r"--base .*: not a diffusers pipeline folder"),
    ("base_missing", r"--base ./nowhere: no such pipeline folder"),
    ("not_safetensors", r"must be .safetensors"),
])
def test_errors_name_the_path(tmp_path, case, match):
    base = _pipeline(tmp_path / "base")
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / LORA_WEIGHT_NAME).write_bytes(b"")
    aligned, given = str(lora), str(base)
    if case == "unexported_run":
        aligned = str(_run(tmp_path / "run", base))
    elif case == "no_base":
        given = None
    elif case == "base_not_pipeline":
        given = str(lora)
    elif case == "base_missing":
        given = "./nowhere"
    elif case == "not_safetensors":
        (lora / "weights.bin").write_bytes(b"")
        aligned = str(lora / "weights.bin")
    with pytest.raises((FileNotFoundError, ValueError), match=match):
        resolve_models(aligned, given)
