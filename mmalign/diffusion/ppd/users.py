"""Embed every user of a data set from its shots (through the disk cache), per ``method.ppd``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmalign.diffusion.ppd.config import PpdConfig
from mmalign.diffusion.ppd.data import read_shots
from mmalign.diffusion.ppd.embeddings import (
    UserEmbeddingCache,
    clip_margin_user_embedding,
    clip_source_id,
    clip_user_embedding,
    vlm_source_id,
    vlm_user_embedding,
)
from mmalign.mllm.model import load_vlm
from mmalign.mllm.model_config import VLMModelConfig

EMBEDDINGS = ("vlm", "clip", "clip_margin")
CLIP_EMBEDDINGS = {"clip": clip_user_embedding, "clip_margin": clip_margin_user_embedding}


def embed_users(cfg: PpdConfig, dataset, splits: dict[Any, tuple[list[int], list[int]]], cache_dir: str | Path,
                device: str | torch.device = "cpu") -> tuple[dict[Any, torch.Tensor], dict[str, Any]]:
    """``({user: embedding (S, H)}, stats)``; the model (VLM or scorer) is loaded only when the cache misses."""
    if cfg.embedding not in EMBEDDINGS:
        raise ValueError(f"method.ppd.embedding: unknown '{cfg.embedding}' ({', '.join(EMBEDDINGS)})")
    if cfg.embedding == "vlm":
        if not cfg.vlm:
            raise ValueError("method.ppd.vlm: a VLM path or hub id is needed for embedding=vlm")
        cache = UserEmbeddingCache(cache_dir, vlm_source_id(cfg.vlm, cfg.max_new_tokens))
    else:
        source = clip_source_id(cfg.scorer, cfg.scorer_checkpoint)
        cache = UserEmbeddingCache(cache_dir, source if cfg.embedding == "clip" else f"{cfg.embedding}:{source}")
    loaded: dict[str, Any] = {}

    def compute(shots):
        if cfg.embedding == "vlm":
            if "vlm" not in loaded:
                loaded["vlm"] = load_vlm(VLMModelConfig(pretrained=cfg.vlm, dtype=cfg.vlm_dtype, attn_implementation=None,
                                                          trust_remote_code=cfg.trust_remote_code),
                                           device=device, train_safe=False)
            return vlm_user_embedding(*loaded["vlm"], shots, max_new_tokens=cfg.max_new_tokens)
        if "scorer" not in loaded:
            from scorers import load_scorer

            loaded["scorer"] = load_scorer(cfg.scorer, cfg.scorer_checkpoint, device=device)
        return CLIP_EMBEDDINGS[cfg.embedding](loaded["scorer"], shots), ""

    embeddings, hits = {}, 0
    for user, (shot_idx, _) in splits.items():
        embeddings[user], cached = cache.get_or_compute(read_shots(dataset, shot_idx), compute)
        hits += int(cached)
    shapes = {tuple(e.shape) for e in embeddings.values()}
    if len(shapes) > 1:
        raise ValueError(f"user embeddings of different shapes {sorted(shapes)} in {cache_dir}")
    return embeddings, {"embedding": cfg.embedding, "users_embedded": len(embeddings) - hits,
                        "users_from_cache": hits, "embedding_shape": list(shapes.pop()) if shapes else None}
