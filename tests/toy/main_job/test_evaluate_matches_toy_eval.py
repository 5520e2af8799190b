"""Issue 25 item 6: ``mmalign evaluate --scorer toy-judge`` on a toy DPO run folder reports the numbers of that
run's own ``toy_eval`` (one evaluation path: the same (caption, seed) plan and generators, sampler, judge scorer
and win counts, :mod:`mmalign.evaluation`).

The run (tests/toy/main_job/conftest.py): toy_dpo.yaml, LoRA DPO, 3 steps at a high learning rate on a tiny SD1.x
pipeline, toy_eval on 3 captions x 2 seeds, 3 DDIM steps, guidance 3. ``evaluate`` reads the base from the run's
recorded ``model.pretrained`` and loads the exported LoRA with ``load_lora_weights``; toy_eval sampled the trained
pipeline in memory (base = adapters disabled).
"""

from __future__ import annotations

import json

import pytest

from mmalign.cli import main

from .conftest import CAPTIONS, SEEDS

pytestmark = pytest.mark.slow


def _evaluate(run_dir, captions, out, *extra):
    argv = ["evaluate", str(run_dir), "--scorer", "toy-judge", "--prompts", captions,
            "--seeds", ",".join(map(str, SEEDS)), "--steps", "3", "--guidance-scale", "3.0",
            "--images-per-batch", "64", "--device", "cpu", "--no-progress", "--grid-size", "4", "--out", str(out),
            *extra]
    assert main(argv) == 0
    return json.loads((out / "eval.json").read_text())


@pytest.mark.parametrize("name, overrides", [("lora", ()), ("full", ("lora.rank=0", "train.lr=1e-3"))])
def test_evaluate_toy_judge_equals_the_runs_toy_eval(run_recipe, tiny_inputs, tmp_path, name, overrides):
    _, run_dir, summary = run_recipe(name, *overrides)
    toy = summary["toy_eval"]
    ev = _evaluate(run_dir, tiny_inputs[2], tmp_path / "eval")
    assert ev["aligned_kind"] == ("lora" if name == "lora" else "pipeline")
    assert ev["base"] == str(__import__("pathlib").Path(tiny_inputs[0]).resolve())  # the run's model.pretrained
    row = ev["scorers"]["toy-judge"]
    assert (row["wins"], row["ties"], row["losses"]) == (toy["wins"], toy["ties"], toy["losses"])
    assert row["win_rate"] == toy["win_rate"]
    assert row["win_rate_ci95"] == toy["win_rate_ci95"]  # the same paired bootstrap over captions
    assert row["base"]["mean"] == pytest.approx(toy["base_mean"], abs=1e-6)
    assert row["aligned"]["mean"] == pytest.approx(toy["aligned_mean"], abs=1e-6)
    assert row["gain"]["mean"] == pytest.approx(toy["mean_gain"], abs=1e-6)
    assert row["gain_standard_error"] == pytest.approx(toy["gain_standard_error"], abs=1e-6)
    # image by image, in toy_eval's caption-major order
    per_image = json.loads((run_dir / "toy_eval" / "scores.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "eval" / "scores.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [c for c in CAPTIONS for _ in SEEDS]
    for which in ("base", "aligned"):
        got = [r["scores"]["toy-judge"][which] for r in rows]
        assert got == pytest.approx(per_image[which], abs=1e-6)
    # the trained model differs from its base, so the agreement is not that of two identical models
    assert per_image["base"] != per_image["aligned"]
