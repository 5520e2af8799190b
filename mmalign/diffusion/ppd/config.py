"""``method.ppd`` of the diffusion recipe config (PPD: personalized preference fine-tuning, spec §5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PpdConfig:
    embedding: str = "vlm"
    """User-embedding source: vlm (AutoModelForImageTextToText, final-step hidden states across layers; the paper)
    | clip (mean(chosen) - mean(rejected) image embeddings of a scorer; light alternative)
    | clip_margin (mean of caption text embedding * (chosen - rejected) image embedding, elementwise: the
    caption-aware light alternative)."""
    vlm: str | None = None
    """embedding=vlm: hub id or local folder of the VLM (paper: lmms-lab/llava-onevision-qwen2-7b-ov-chat, use
    its transformers port llava-hf/llava-onevision-qwen2-7b-ov-chat-hf)."""
    vlm_dtype: str = "bfloat16"
    """dtype of the VLM while embedding users."""
    max_new_tokens: int = 1024
    """Greedy generation length of the user profile (official 1024); the embedding is taken at the last step."""
    trust_remote_code: bool = False
    """Pass trust_remote_code to the VLM loader (only for models that need it)."""
    scorer: str = "clipscore"
    """embedding=clip / clip_margin: scorer card name (scorers.load_scorer)."""
    scorer_checkpoint: str | None = None
    """embedding=clip / clip_margin: scorer checkpoint (null: the card's default)."""
    shots: int = 4
    """N few-shot pairs per user that make its embedding (paper: 4); they are excluded from training."""
    cache_dir: str | None = None
    """Where user embeddings are cached (null: <output_dir>/user_embeddings)."""
    num_tokens: int = 4
    """User tokens for a single-vector embedding (clip); a VLM embedding gives one token per layer."""
    init: str = "zero"
    """New key/value init: zero (W_v' = 0: the policy starts equal to the reference) | text (copy to_k/to_v)."""
    scale: float = 1.0
    """Scale of the user attention branch."""
    user_dropout: float = 0.1
    """Probability of zeroing a pair's user embedding in training (regularisation, unseen users)."""
    seed: int = 0
    """Seed of the shot split and of the adapter init."""
