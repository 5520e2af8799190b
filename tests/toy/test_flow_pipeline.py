"""The toy SD3 pipeline of the flow-matching toy check builds from the shipped toy parts, trains, saves in the
released layout (no T5) and loads through the diffusion adapter as family sd3."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_toy_sd3_builds_trains_and_loads(tmp_path):
    from mmalign.diffusion.adapter import encode_text, load_parts
    from mmalign.toy.flow_pipeline import build_toy_sd3, toy_sd3_components

    pipe = toy_sd3_components(0)
    before = [p.detach().clone() for p in pipe.transformer.parameters()]
    report = build_toy_sd3(tmp_path / "toy_sd3", images=32, steps=3, batch_size=4)
    assert report["steps"] == 3 and report["velocity_loss"] > 0
    parts = load_parts(str(tmp_path / "toy_sd3"))
    assert parts.family == "sd3" and len(parts.text_encoders) == 2
    moved = max(float((a - b).abs().max()) for a, b in zip(parts.transformer.parameters(), before))
    assert moved > 0
    emb = encode_text(parts, ["a small red circle on the left"], "cpu")
    assert emb["pooled"].shape == (1, 64) and emb["prompt_embeds"].shape[-1] == 64
    # both CLIP slots hold the shipped toy text encoder (identity projections): equal pooled halves
    torch.testing.assert_close(emb["pooled"][:, :32], emb["pooled"][:, 32:])
