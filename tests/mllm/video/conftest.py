"""Shared fixtures of the video tests: a tiny random video LLM (real classes, offline tokenizer) and toy clips."""

import pytest

from mmalign.data.video_io import VideoSampling, read_video
from mmalign.toy.videos import load_manifest

TOY_MANIFEST = "assets/videos/toy/manifest.jsonl"


@pytest.fixture(scope="session")
def toy_clips():
    """``{split: [(frames, direction question, direction)]}`` of the shipped toy videos (8 frames, 56 px)."""
    sampling = VideoSampling(num_frames=8, max_frames=8)
    out = {}
    for split in ("train", "test"):
        rows = load_manifest(TOY_MANIFEST, split)
        out[split] = [(read_video(r["video"], sampling).frames, r["questions"][0]["question"], r["direction"])
                      for r in rows]
    return out


@pytest.fixture(scope="session")
def tiny_qwen2vl():
    from mmalign.testing.tiny_video import build_tiny_video_llm

    return build_tiny_video_llm("qwen2vl", seed=0)


@pytest.fixture(scope="session")
def tiny_llavaov():
    """A tiny LLaVA-OneVision (LLaVA-Video architecture) with the llava-hf typed-content chat template."""
    from mmalign.testing.tiny_video import build_tiny_video_llm

    return build_tiny_video_llm("llavaov", seed=0)
