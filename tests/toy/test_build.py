"""A shortened asset build (``python -m mmalign.toy build --quick``) runs, writes the full layout, and is
deterministic: a second build from the same seeds (in the test's own process, after the real command's) writes
byte-identical files (the report differs only in its timings)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from mmalign.toy import paths

LAYOUT = ("pipeline/model_index.json", "pipeline/unet/diffusion_pytorch_model.safetensors",
          "pipeline/vae/diffusion_pytorch_model.safetensors", "pipeline/text_encoder/model.safetensors",
          "pipeline/tokenizer/tokenizer_config.json", "pipeline/scheduler/scheduler_config.json", paths.SCORER_CHECKPOINT,
          "data/pairs.parquet", "data/dual_captions.parquet", "data/per_user.parquet", "data/ranked.jsonl",
          "data/unpaired.jsonl", "data/heldout_pairs.parquet", paths.TRAIN_CAPTIONS, paths.HELDOUT_CAPTIONS,
          paths.BUILD_REPORT)


def quick_build(out):
    subprocess.run([sys.executable, "-m", "mmalign.toy", "build", "--quick", "--out", str(out)], check=True,
                   env={**os.environ, "TQDM_DISABLE": "1"}, timeout=600)


def quick_build_in_process(out):
    """What ``python -m mmalign.toy build --quick`` runs, in this process (its torch thread count restored)."""
    import torch

    from mmalign.toy.__main__ import main

    threads = torch.get_num_threads()
    try:
        assert main(["build", "--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)


def file_digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != paths.BUILD_REPORT}


def report_without_timings(root) -> dict:
    return {k: v for k, v in json.loads((root / paths.BUILD_REPORT).read_text()).items() if not k.endswith("seconds")}


@pytest.mark.slow
def test_quick_build_writes_every_asset_deterministically(tmp_path):
    out = tmp_path / "toy"
    quick_build(out)
    for rel in LAYOUT:
        assert (out / rel).is_file(), rel
    report = json.loads((out / paths.BUILD_REPORT).read_text())
    assert report["settings"]["unet_steps"] == 4
    assert 0.85 < report["judge_renders_heldout"] <= 1.0
    assert 0.0 <= report["judge_vae_reconstruction"] <= 1.0  # measured right after the VAE stage
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out / paths.PIPELINE)
    assert pipe.tokenizer.model_max_length == 16 and pipe.unet.config.sample_size == 16

    again = tmp_path / "again"  # the same seeds in another process (this one): the same bytes
    quick_build_in_process(again)
    first, second = file_digests(out), file_digests(again)
    assert len(first) > len(LAYOUT) and first == second
    assert report_without_timings(out) == report_without_timings(again)
