"""Issue 26: the resume and export error paths as a user meets them (a real subprocess for the recipe and for
``mmalign export``, the other cases the same entry points in this process). Each is one line on stderr
naming the file or config key, exit code 2, before any model loads (the base model's weights are destroyed after
the first run, so loading it would fail differently), and nothing in the run folder changes."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmalign import checkpoint as ckpt
from tests.helpers import REPO, SMALL_DIFFUSION_RUN, run_diffusion_recipe

pytestmark = pytest.mark.slow

CONFIG = REPO / "recipes" / "configs" / "diffusion" / "sd15_dpo.yaml"


class _Payload:
    """A pickle that would create ``marker`` when unpickled without weights-only loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, data_dirs, tmp_path_factory):
    """``(model_dir, run_dir, data)``: a 2-step sd15 DPO run with its step-2 checkpoint; then the base model's
    weight files are overwritten with garbage (a model load after this fails with another error)."""
    root = tmp_path_factory.mktemp("resume_errors")
    model = Path(shutil.copytree(tiny_model_dirs["sd15"], root / "model"))
    run = root / "run"
    run_diffusion_recipe("sd15_dpo.yaml", model, data_dirs["pairs"], run, "train.checkpoint_every=2",
                         "export.enabled=false", cache_dir=root / "cache")
    assert (ckpt.final_path(run, 2) / ckpt.RUN_CONFIG_FILE).is_file()
    for weights in model.rglob("*.safetensors"):
        weights.write_bytes(b"not a model")
    return model, run, data_dirs["pairs"], root / "cache"


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _in_process(args: list[str]) -> subprocess.CompletedProcess:
    """What ``_run(args)`` runs (``recipes/diffusion.py ...`` under :func:`mmalign.recipe_entry.run_recipe`, or
    ``-m mmalign ...``: :func:`mmalign.cli.main`), in this process: the exit code and what it wrote to stderr. One
    real process per command stays (the first resume test, the diffusion export test); the rest run here."""
    import contextlib
    import io
    import runpy

    from mmalign.recipe_entry import reset_accelerate_state, run_recipe

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        if args[:2] == ["-m", "mmalign"]:
            from mmalign.cli import main

            code = main(args[2:])
        else:
            reset_accelerate_state()
            try:
                code = run_recipe(runpy.run_path(str(REPO / args[0]))["main"], args[1:])
            finally:
                reset_accelerate_state()
    return subprocess.CompletedProcess(args, code, "", err.getvalue())


def _resume(trained, run: Path, *overrides: str, process: bool = False) -> subprocess.CompletedProcess:
    model, _, data, cache = trained
    return (_run if process else _in_process)(
        ["recipes/diffusion.py", "--config", str(CONFIG), *SMALL_DIFFUSION_RUN, f"model.pretrained={model}",
         f"data.path={data}", f"output_dir={run}", f"data.cache_dir={cache}", "train.max_steps=4",
         "export.enabled=false", *overrides])


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run folder (each test damages its own)."""
    return Path(shutil.copytree(trained[1], tmp_path / "run"))


def test_resume_from_a_path_that_does_not_exist(trained, run_copy, tmp_path):
    before = _snapshot(run_copy)
    missing = tmp_path / "no" / "checkpoint-7"
    _one_line_error(_resume(trained, run_copy, f"train.resume={missing}", process=True), f"train.resume: {missing}",
                    "not a complete checkpoint")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(("override", "key", "saved"), [
    ("lora.rank=4", "lora.rank", "lora.rank=8"),
    ("lora.rank=0", "lora.rank", "lora.rank=8"),  # full fine-tuning on a LoRA checkpoint
    ("lora.alpha=32", "lora.alpha", "lora.alpha=8"),
    ("lora.target_modules=[to_q,to_v]", "lora.target_modules", "lora.target_modules=[to_k,to_out.0,to_q,to_v]"),
    # method.name: sd15_dpo.yaml sets method.beta and method.dpo.*, so a switch to any other method is refused by
    # the method key policy before the resume is compared (tests/diffusion/test_registry.py); the recorded-method
    # comparison itself: tests/core/test_resume_check.py
])
def test_resume_latest_with_a_shape_key_changed_names_the_key(trained, run_copy, override, key, saved):
    before = _snapshot(run_copy)
    line = _one_line_error(_resume(trained, run_copy, "train.resume=latest", override), f"train.resume: {key} is",
                           "run_config.json", f"resume with {saved}")
    assert str(ckpt.final_path(run_copy, 2)) in line
    assert _snapshot(run_copy) == before


def test_resume_latest_with_another_model_names_model_pretrained(trained, run_copy, tiny_model_dirs):
    before = _snapshot(run_copy)
    _one_line_error(_resume(trained, run_copy, "train.resume=latest", f"model.pretrained={tiny_model_dirs['sdxl']}"),
                    "train.resume: model.pretrained is")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(("name", "zipped"), [("optimizer.bin", True), ("scheduler.bin", False)])
def test_resume_refuses_a_state_file_that_weights_only_loading_refuses(trained, run_copy, tmp_path, name, zipped):
    marker = tmp_path / "payload-ran"
    target = ckpt.final_path(run_copy, 2) / name
    if zipped:  # torch.save's zip layout (what accelerate writes) ...
        torch.save({"state": _Payload(marker)}, target)
    else:  # ... and a bare pickle
        target.write_bytes(pickle.dumps({"state": _Payload(marker)}, protocol=2))
    before = _snapshot(run_copy)
    _one_line_error(_resume(trained, run_copy, "train.resume=latest"), f"train.resume: {target} cannot be loaded",
                    "weights-only loading refused it", "posix.system")
    assert not marker.exists()
    assert _snapshot(run_copy) == before


def test_export_of_a_checkpoint_whose_trainable_file_is_not_safetensors(run_copy, tmp_path):
    bad = ckpt.final_path(run_copy, 2) / ckpt.TRAINABLE_FILE
    bad.write_bytes(b"\xff" * 64)
    before = _snapshot(run_copy)
    proc = _run(["-m", "mmalign", "export", str(ckpt.final_path(run_copy, 2)), "--out", str(tmp_path / "lora")])
    _one_line_error(proc, f"{bad} is not a safetensors file")
    assert _snapshot(run_copy) == before and not (tmp_path / "lora").exists()


def test_resume_refuses_a_trainable_file_that_is_not_safetensors(trained, run_copy):
    bad = ckpt.final_path(run_copy, 2) / ckpt.TRAINABLE_FILE
    bad.write_bytes(b"\xff" * 64)
    before = _snapshot(run_copy)
    _one_line_error(_resume(trained, run_copy, "train.resume=latest"), f"{bad} is not a safetensors file")
    assert _snapshot(run_copy) == before


def test_export_of_a_vlm_adapter_that_is_not_safetensors(tmp_path):
    """The VLM side of ``mmalign export`` (found on the way): a damaged adapter file is named before the base
    model (here: one that does not exist) would load."""
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "/nowhere", "peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    proc = _in_process(["-m", "mmalign", "export", str(tmp_path / "run"), "--merge", "--out", str(tmp_path / "merged")])
    _one_line_error(proc, f"{adapter / 'adapter_model.safetensors'} is not a safetensors file")
