"""``mmalign label`` (synthetic preferences: K images per prompt, scorer-ranked) with SD3 and FLUX pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_label_with_flow_pipelines(tiny_model_dirs, tmp_path, kind):
    from mmalign.cli import main
    from mmalign.data import load_preference_data
    from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints

    checkpoint = save_tiny_scorer_checkpoints(tmp_path / "scorer")["clipscore"]["checkpoint"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on the left\na blue square at the top\n")
    out = tmp_path / "labelled"
    assert main(["label", "--pipeline", tiny_model_dirs[kind], "--prompts", str(prompts), "--per-prompt", "3",
                 "--scorer", "clipscore", "--scorer-arg", f"clipscore.checkpoint={checkpoint}", "--output", str(out),
                 "--steps", "2", "--pairs", "all", "--height", "32", "--width", "32",
                 "--pipeline-dtype", "bfloat16"]) == 0
    summary = json.loads((out / "label_summary.json").read_text())
    assert summary["prompts"] == 2 and summary["n_pairs"] == 6
    ranked = load_preference_data(out / "ranked.jsonl", "ranked")
    assert len(ranked) == 2 and len(ranked[0]["images"]) == 3 and ranked[0]["images"][0].size == (32, 32)
    pixels = [np.asarray(im.convert("RGB"), dtype=np.float32) for im in ranked[0]["images"]]
    assert np.abs(pixels[0] - pixels[1]).max() > 0 and pixels[0].std() > 0  # distinct, non-constant images
