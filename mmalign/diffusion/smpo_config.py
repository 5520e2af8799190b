"""SmPO's options (``method.smpo.*``): light, no torch (soft labels: :mod:`mmalign.diffusion.soft_labels`; the step:
:mod:`mmalign.diffusion.steps.smpo`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmalign.diffusion.noise_config import NoiseConfig


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
