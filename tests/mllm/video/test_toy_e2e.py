"""End to end on the toy videos with the shipped configs and CLI, as documented in their headers:

SFT a tiny random Qwen2-VL on direction questions (toy_sft.yaml) → ``mmalign temple make-pairs`` (rejected = the
SFT model's answers on reversed / shuffled clips) → the r4 → r2 DPO curriculum (toy_temple.yaml).

Asserted: SFT lowers its loss; pairs are generated, filtered and counted; each DPO stage starts from a reset
reference (zero margin at its first step) and ends with a positive implicit-reward margin on its pairs. The
held-out forced-choice direction accuracies (random init, after SFT, after DPO) are printed, not asserted: within
this test's budget (30 SFT steps) the tiny model is still on its chance plateau. The full-length numbers (0.250 ->
0.750 after 400 SFT steps -> 0.958 after the curriculum, seed 0) are in the two configs' headers."""

import json
import os
import runpy
from pathlib import Path

import pytest
import yaml

from mmalign.cli import main as cli
from tests.helpers import REPO

SFT_STEPS = int(os.environ.get("MMALIGN_TOY_SFT_STEPS", "30"))
DPO_STEPS = int(os.environ.get("MMALIGN_TOY_DPO_STEPS", "4"))


@pytest.mark.slow
def test_toy_sft_pairs_temple_curriculum(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = runpy.run_path(str(REPO / "recipes" / "video.py"))["main"]
    sft = recipe(["--config", "recipes/configs/video/toy_sft.yaml", f"output_dir={tmp_path / 'sft'}",
                  f"train.max_steps={SFT_STEPS}", "train.progress_bar=false"])
    history = sft["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]

    rows = [json.loads(x) for x in Path("assets/videos/toy/direction_train.jsonl").read_text().splitlines()]
    subset = [r for d in ("left", "right", "up", "down") for r in rows if r["answer"] == d][::6]  # 3 per direction
    subset_file = tmp_path / "subset.jsonl"
    subset_file.write_text("".join(json.dumps({**r, "video": str(REPO / "assets/videos/toy" / r["video"])}) + "\n"
                                   for r in subset))
    pairs = tmp_path / "pairs"
    assert cli(["temple", "make-pairs", "--model", str(tmp_path / "sft"), "--videos", str(subset_file),
                "--questions", str(subset_file), "--chosen", "answer", "--kinds", "reverse,shuffle",
                "--magnitudes", "4,2", "--frames", "4", "--frames-per-clip", "1", "--max-new-tokens", "4",
                "--max-length-ratio", "0", "--out", str(pairs)]) == 0
    report = json.loads((pairs / "report.json").read_text())
    assert report["generated"] == len(subset) * 2 * 2
    assert report["kept"] + sum(report["dropped"].values()) == report["generated"] and report["kept"] > 0

    cfg = yaml.safe_load(Path("recipes/configs/video/toy_temple.yaml").read_text())
    for stage in cfg["stages"]:
        stage["data"] = str(pairs / Path(stage["data"]).name)
        stage["max_steps"] = DPO_STEPS
    cfg_path = tmp_path / "toy_temple.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    kept_per_stage = [len((pairs / f"pairs_r{m}.jsonl").read_text().splitlines()) for m in (4, 2)]
    if min(kept_per_stage) < cfg["train"]["batch_size"]:
        cfg["train"]["batch_size"] = max(1, min(kept_per_stage))
        cfg_path.write_text(yaml.safe_dump(cfg))
    dpo = recipe(["--config", str(cfg_path), f"model.pretrained={tmp_path / 'sft'}",
                  f"output_dir={tmp_path / 'temple'}", "train.progress_bar=false"])
    for i, stage in enumerate(dpo["stages"]):
        hist = json.loads((tmp_path / "temple" / f"{i:02d}-{stage['stage']}" / "summary.json").read_text())["history"]
        assert hist[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)  # reference reset: policy == reference
        assert hist[-1]["rewards/margins"] > 0  # DPO moved the margin the right way on its pairs
    acc = sft["toy_direction_accuracy"], dpo["toy_direction_accuracy"]
    assert acc[1]["before"] == pytest.approx(acc[0]["after"])  # the DPO run starts from the saved SFT model
    with capsys.disabled():
        print(f"\ntoy direction accuracy, 24 held-out clips (chance 0.25): random init {acc[0]['before']:.3f}, "
              f"SFT {SFT_STEPS} steps {acc[0]['after']:.3f}, TEMPLE DPO r4->r2 {acc[1]['after']:.3f}; pairs {report}")
