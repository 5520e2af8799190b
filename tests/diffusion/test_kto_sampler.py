"""Diffusion-KTO's positive-ratio sampler equals the official weights (jacklishufan/diffusion-kto @ 226bbd0
train_kto_sd_v1.5.py l.724-741 make_weights_for_balanced_classes, l.1186-1190 WeightedRandomSampler)."""

from __future__ import annotations

import pytest
import torch

from mmalign.config import ConfigError
from mmalign.diffusion.kto_sampling import positive_ratio_weights
from mmalign.training.sampler import EpochSampler
from tests.helpers import REPO

CONFIGS = REPO / "recipes" / "configs" / "diffusion"


def _official_weights(labels: list[int], positive_ratio: float) -> list[float]:
    """make_weights_for_balanced_classes, written out (without its dataset iteration and debug prints)."""
    nclasses = 2
    count = [0] * nclasses
    for label in labels:
        count[label] += 1
    weight_per_class = [0.0] * nclasses
    N = float(sum(count))
    for i in range(nclasses):
        weight_per_class[i] = N / (float(count[i]) + 1e-9)
    weight_per_class[1] *= positive_ratio
    weight_per_class[0] *= 1 - positive_ratio
    weight = [0] * len(labels)
    for idx, val in enumerate(labels):
        weight[idx] = weight_per_class[val]
    return weight


def test_weights_and_sampler_draw_desirable_images_at_the_ratio():
    labels = [1] * 20 + [0] * 80  # 20 % desirable in the data
    ours = positive_ratio_weights([bool(v) for v in labels], 0.8)
    assert ours == pytest.approx(_official_weights(labels, 0.8), rel=1e-12)
    sampler = EpochSampler(len(labels), seed=0, weights=ours)
    draws = []
    for epoch in range(30):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    desirable = sum(labels[i] for i in draws) / len(draws)
    assert len(draws) == 3000 and 0.77 < desirable < 0.83  # official: a draw is desirable with p = 0.8
    # the same distribution as torch's WeightedRandomSampler on the official weights
    official = torch.utils.data.WeightedRandomSampler(_official_weights(labels, 0.8), 3000,
                                                      generator=torch.Generator().manual_seed(0))
    assert abs(sum(labels[i] for i in official) / 3000 - desirable) < 0.04
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)  # resumable: a function of (seed, epoch)
    unweighted = EpochSampler(len(labels), seed=0)
    assert sorted(unweighted) == list(range(100))  # the default stays a permutation
    with pytest.raises(ValueError, match="method.kto.positive_ratio"):
        positive_ratio_weights([True, False], 1.0)


def test_config_key_is_kto_only():
    from mmalign.config import load_config
    from mmalign.diffusion.config import DiffusionRecipeConfig

    cfg = load_config(DiffusionRecipeConfig, str(CONFIGS / "sd15_kto.yaml"), [])
    assert cfg.method.kto.positive_ratio == 0.8
    with pytest.raises(ConfigError, match="'method.kto.positive_ratio' is an option of method 'kto'"):
        load_config(DiffusionRecipeConfig, str(CONFIGS / "toy_dpo.yaml"), ["method.kto.positive_ratio=0.8"])
    with pytest.raises(ConfigError, match="'method.kto.positive_ratio'.*< 1"):
        load_config(DiffusionRecipeConfig, str(CONFIGS / "sd15_kto.yaml"), ["method.kto.positive_ratio=1.0"])
