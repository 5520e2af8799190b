"""Bad input to ``mmalign evaluate`` is one line on stderr and exit 2 before any model loads (real subprocesses).

Every case names a real base pipeline folder, so a model *could* load: the error must come first, and nothing is
written to ``--out``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline

    return str(save_tiny_pipeline("sd15", tmp_path_factory.mktemp("bad_input_base") / "sd15"))


def _evaluate(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "mmalign", "evaluate", *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def _prompts(tmp_path, text="a red square\n"):
    path = tmp_path / "prompts.txt"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case, expected", [
    ("missing_lora", "nope_lora: no such file or folder"),
    ("empty_lora_folder", "no LoRA (pytorch_lora_weights.safetensors), no pipeline"),
    ("lora_without_base", "--base is required"),
    ("empty_prompt_file", "prompts.txt: no prompts"),
    ("unknown_scorer", "--scorer: unknown scorer 'nonesuch'; available:"),
    ("bad_seeds", "--seeds '0,x'"),
])
def test_one_line_exit_2_before_any_model_loads(base_dir, tmp_path, case, expected):
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"not read before the checks")
    aligned, scorer, prompts, extra = str(lora), "toy-judge", _prompts(tmp_path), ["--base", base_dir]
    if case == "missing_lora":
        aligned = str(tmp_path / "nope_lora")
    elif case == "empty_lora_folder":
        aligned = str(tmp_path / "empty")
        os.mkdir(aligned)
    elif case == "lora_without_base":
        extra = []
    elif case == "empty_prompt_file":
        prompts = _prompts(tmp_path, "\n   \n")
    elif case == "unknown_scorer":
        scorer = "toy-judge,nonesuch"
    elif case == "bad_seeds":
        extra += ["--seeds", "0,x"]
    out = tmp_path / "out"
    proc = _evaluate(aligned, "--scorer", scorer, "--prompts", prompts, "--out", str(out), "--device", "cpu", *extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mmalign evaluate: error: ") and expected in lines[0], lines[0]
    assert not out.exists()
