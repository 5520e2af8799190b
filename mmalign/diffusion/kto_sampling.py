"""Diffusion-KTO's class-ratio sampler (``method.kto.positive_ratio``).

Official (``jacklishufan/diffusion-kto`` @ 226bbd0, ``train_kto_sd_v1.5.py``): with a ``gt_label*`` policy the
loader samples with ``torch.utils.data.WeightedRandomSampler(weights, len(weights))`` (l.1186-1190, with
replacement), weights from ``make_weights_for_balanced_classes`` (l.724-741)::

    weight_per_class[c] = N / count[c];   weight_per_class[1] *= positive_ratio;   weight_per_class[0] *= 1 - positive_ratio

so a draw is desirable with probability ``positive_ratio`` (argparse default 0.5 = balanced classes; the released
example ``exps/example.sh`` uses ``--positive_ratio 0.8``). The weights go to :class:`mmalign.training.sampler.EpochSampler`,
which draws ``len(dataset)`` indices with replacement per epoch from a ``(seed, epoch)`` generator (resumable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def positive_ratio_weights(labels: Sequence[bool], positive_ratio: float) -> list[float]:
    """Per-example sampling weights: class ``c`` gets ``N / count[c]`` times ``positive_ratio`` (desirable) or
    ``1 - positive_ratio`` (undesirable), as the official ``make_weights_for_balanced_classes``."""
    if not 0.0 < positive_ratio < 1.0:
        raise ValueError(f"config key 'method.kto.positive_ratio' must be in (0, 1), got {positive_ratio}")
    n = float(len(labels))
    count = [sum(1 for v in labels if not v), sum(1 for v in labels if v)]
    per_class = [n / (float(count[c]) + 1e-9) for c in (0, 1)]
    per_class[1] *= positive_ratio
    per_class[0] *= 1 - positive_ratio
    return [per_class[int(bool(v))] for v in labels]


def training_labels(train_set: Any) -> list[bool]:
    """The desirable / undesirable label of every example of a KTO training set (cached entries or the records
    of the uncached data set), without reading any image."""
    if hasattr(train_set, "entries"):
        return [bool(e["label"]) for e in train_set.entries]
    records = getattr(getattr(train_set, "dataset", None), "records", None)
    if records is None:
        raise ValueError("method.kto.positive_ratio: the training set exposes no labels")
    return [bool(r.label) for r in records]
