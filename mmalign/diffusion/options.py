"""The light options sections of the diffusion methods that have their own module (``method.smpo.*``,
``method.inpo.noise`` / ``method.smpo.noise``, ``method.ppd.*``): no torch, so the config schema and the method
registry load before any model library, and the registry imports no method package (PPD's code imports the
registry's shared builders, never the other way round).

* :class:`NoiseConfig` — a noise provider's options (the providers: :mod:`mmalign.diffusion.noise_providers`);
* :class:`SmpoConfig` — SmPO's soft labels and noise (:mod:`mmalign.diffusion.soft_labels`,
  :mod:`mmalign.diffusion.steps.smpo`);
* :class:`PpdConfig` — PPD's user embeddings and user cross-attention (:mod:`mmalign.diffusion.ppd`, spec §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NoiseConfig:
    provider: str = "forward"
    """forward | ddim | renoise (the defaults of method.smpo.noise: renoise, method.inpo.noise: ddim)."""
    convention: str = "official"
    """official | exact: the inversion grid and the timestep the model is queried at (inversion_plan.py).
    official = diffusers 0.20 DDIMInverseScheduler as the SmPO/InPO code ran it: rolled "leading" grid of K
    points, model queried at the level of its input latent (the clean latent at -T/K + steps_offset), every grid
    step below t, so the latent ends at the next grid level >= t; exact = a grid from the clean latent ending
    exactly at t, model queried at each step's target level."""
    inversion_steps: int = 10
    """K: grid points over the full range [0, T) (official: 10 for SDXL and InPO, 5 for SmPO SD1.5; the official
    convention needs K >= 2). exact: a sample at t gets max(1, ceil(K t / T)) steps ending exactly at t."""
    renoise_iters: int = 1
    """ReNoise re-predictions per inversion step (official SmPO: 1, i.e. the average of 2 predictions)."""
    eta: float = 0.0
    """Stochastic term of DDIM inversion, eta * sqrt(Var_DDIM) * N(0, I) per step (method.inpo.noise: 0.1)."""
    inversion_model: str = "policy"
    """policy (current weights, official) | reference (the reference model)."""


@dataclass
class SmpoConfig:
    scorer: str = "pickscore"
    """Scorer card for the soft labels (scorers.load_scorer name or card YAML path; tiny:<card> = tiny random
    weights for smoke tests). Official: PickScore raw cosine."""
    scorer_checkpoint: str | None = None
    """Scorer checkpoint (local path or hub id; null: the card's default)."""
    scorer_options: dict[str, Any] = field(default_factory=dict)
    """Card overrides passed to scorers.load_scorer (e.g. arch, backbone_checkpoint)."""
    gamma: float = 10.0
    """kappa = gamma * (2p - 1) (paper and code: 10)."""
    order: str = "scorer"
    """scorer: the higher-scored image is the winner (official 'data cleaning'); human: the data's winner stays the
    winner and the scorer only weights the pair, kappa = gamma |2p - 1| (a signed kappa would re-order every pair
    the scorer disagrees with: the same loss as 'scorer'; see mmalign.objectives.smoothed)."""
    labels: str | None = None
    """Soft-label file (JSON). null: <data cache root>/smpo_labels/<scorer>-<data+scorer fingerprint>.json,
    computed on first use. An existing file given here is used as is."""
    reward_range: str = "data"
    """Min/max of the reward normalisation: data (over the data set's scored images, stored with the labels) or a
    named official range: pickapic_v2_pickscore = 0.11543526500463486 .. 0.28201571106910706 (SmPO train.py)."""
    batch_size: int = 32
    """Images per scorer forward while labelling."""
    noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(provider="renoise", eta=0.0))
    """Noise provider (official SmPO: ReNoise inversion); see noise_providers.py."""


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
