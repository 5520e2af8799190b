"""CPU smoke tests of bench/diffusion_step.py: the recipe's step runs on tiny pipelines, prints one valid JSON line per
configuration, and the FLOP counts have the structure of the step (units of one policy forward F on the 2 x pairs
images): LoRA DPO = policy fwd + input-gradient bwd + reference fwd ~ 3F (frozen base weights get no weight
gradients), LoRA MaPO ~ 2F, full-FT DPO ~ 4F (bwd = input + weight gradients ~ 2F), full-FT MaPO ~ 3F."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "bench" / "diffusion_step.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_diffusion_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, dict]:
    """One run of the script (4 configurations, 2 timed steps each, 1-step profiles) -> records by name."""
    profile_dir = tmp_path_factory.mktemp("profiles")
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--steps", "2", "--warmup", "0",
           "--resolution", "16", "--mode", "lora", "full", "--method", "dpo", "mapo",
           "--profile", str(profile_dir), "--profile-steps", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    return {r["name"]: r for r in parsed}


def test_one_json_line_per_configuration_with_expected_keys(records):
    keys = load_bench().JSON_KEYS
    assert sorted(records) == ["sd15_full_dpo", "sd15_full_mapo", "sd15_lora_dpo", "sd15_lora_mapo"]
    for name, r in records.items():
        assert set(keys) <= set(r), (name, set(keys) - set(r))
        assert r["pairs"] == 4 and r["latent_size"] == 8 and r["steps"] == 2
        assert r["pairs_per_s"] > 0 and r["step_ms"] > 0
        assert r["pairs_per_s"] == pytest.approx(4 * 1000 / r["step_ms"], rel=1e-3)
        assert r["model_tflop_per_step"] > 0 and r["forward_tflop"] > 0
        assert r["hw_tflop_per_step"] == r["model_tflop_per_step"]  # no gradient checkpointing here
        assert r["mfu"] == pytest.approx(r["tflops_per_s"] / r["peak_tflops"], abs=1e-5)
        assert r["peak_tflops"] == 989.0 and r["peak_gib"] is None  # CPU: no CUDA allocator statistics
        assert r["gpu"].startswith("cpu") and r["torch"] and r["diffusers"]
        dt.datetime.fromisoformat(r["date"])
        assert Path(r["profile"]).is_file() and "Name" in Path(r["profile"]).read_text()


def test_recipe_setup_is_reported(records):
    lora, full = records["sd15_lora_dpo"]["setup"], records["sd15_full_dpo"]["setup"]
    assert (lora["mode"], lora["reference"], lora["lora_rank"]) == ("lora", "lora", 4)
    assert (full["mode"], full["reference"], full["lora_rank"]) == ("full", "frozen_copy", 0)
    assert records["sd15_lora_mapo"]["setup"]["reference"] == "none"
    assert records["sd15_lora_mapo"]["setup"]["beta"] == 0.1  # sdxl_mapo.yaml's method block
    assert lora["trainable_params"] < full["trainable_params"] / 10
    assert lora["config"] == "recipes/configs/diffusion/sd15_dpo.yaml"


@pytest.mark.parametrize("name, units", [("sd15_lora_dpo", 3.0), ("sd15_lora_mapo", 2.0),
                                         ("sd15_full_dpo", 4.0), ("sd15_full_mapo", 3.0)])
def test_step_flops_in_units_of_a_policy_forward(records, name, units):
    # Below the ideal count: conv_in's input needs no gradient; LoRA adds its own small matmuls.
    assert records[name]["step_over_forward"] == pytest.approx(units, rel=0.06)
    assert records[name]["step_over_forward"] <= units + 0.01


def test_reference_forward_is_the_dpo_minus_mapo_difference(records):
    """Same batch and model: DPO - MaPO FLOPs = one reference forward. Full FT: the frozen copy's forward equals the
    policy forward exactly; LoRA: the base model's forward (adapters off) is slightly below the LoRA policy's."""
    full = records["sd15_full_dpo"]["model_tflop_per_step"] - records["sd15_full_mapo"]["model_tflop_per_step"]
    assert full == pytest.approx(records["sd15_full_dpo"]["forward_tflop"], rel=1e-9)
    lora = records["sd15_lora_dpo"]["model_tflop_per_step"] - records["sd15_lora_mapo"]["model_tflop_per_step"]
    forward = records["sd15_lora_dpo"]["forward_tflop"]
    assert 0.9 * forward < lora < forward  # tiny UNet: rank-4 LoRA matmuls are ~5% of a forward


def test_fails_clearly_without_cuda(monkeypatch):
    bench = load_bench()
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="CUDA is not available.*--device cpu --tiny"):
        bench.main(["--steps", "1"])
    with pytest.raises(SystemExit, match="--device cpu needs --tiny"):
        bench.main(["--device", "cpu"])


def test_suites_parse():
    bench = load_bench()
    parser = bench.build_parser()
    for lines in bench.SUITES.values():
        for line in lines:
            parser.parse_args(line.split())
