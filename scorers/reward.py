"""Rewards: one scorer, or a weighted sum of scorers, behind one call.

The object the online methods (GRPO, online Diffusion-DPO) train from and ``mmalign label`` labels with::

    reward = load_reward({"pickscore": 1.0, "aesthetic": 0.2}, device="cuda", dtype="bfloat16")
    out = reward(images, prompts)        # out.total [B], out.terms {"pickscore": [B], "aesthetic": [B]}

``total = sum_i w_i * n_i(s_i)`` where ``s_i`` are scorer ``i``'s scores on its own scale (HPS ~25, PickScore ~21,
aesthetic ~5; each card states its scale) and ``n_i`` the normalisation:

* ``none`` (default): raw scores, as flow_grpo's ``multi_score`` weighted sum (``flow_grpo/rewards.py``) — the
  group-relative advantages of GRPO remove each prompt's offset anyway;
* ``zscore`` / ``rank``: within each prompt group of ``group_size`` consecutive candidates
  (:func:`scorers.ensemble.normalize_within_prompt`), so scorers on different scales weigh as their weights say;
  with weights ``1/n`` this is exactly ``mmalign label``'s ensemble (:func:`scorers.ensemble.ensemble_scores`).

``terms`` are always the raw per-scorer scores, for logging.  Any object with ``.name`` and
``.score(images, prompts, batch_size=...) -> Tensor[B]`` can be a term (what :func:`scorers.load_scorer` returns
for every card).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from scorers.ensemble import NORMALIZATIONS, normalize_within_prompt


class ScorerLike(Protocol):
    name: str

    def score(self, images: Any, prompts: Any = None, *, batch_size: int = 32) -> torch.Tensor: ...


def parse_reward_spec(spec: str | Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    """``"pickscore:1.0,aesthetic:0.2"`` / ``"pickscore"`` / ``{"pickscore": 1.0}`` / ``["pickscore"]`` -> weights.

    A name without a weight weighs 1. Raises ``ValueError`` naming the bad entry: an empty spec, a duplicate name,
    a weight that is not a finite number, or all weights zero.
    """
    if isinstance(spec, str):
        items: list[tuple[str, Any]] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, sep, weight = part.rpartition(":") if ":" in part else (part, "", "1")
            items.append((name.strip(), weight.strip() if sep else 1.0))
    elif isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = [(str(k), 1.0) for k in spec]
    if not items:
        raise ValueError("reward: give at least one scorer, e.g. 'pickscore:1.0,aesthetic:0.2'")
    weights: dict[str, float] = {}
    for name, raw in items:
        if not name:
            raise ValueError(f"reward: an entry has no scorer name (spec {spec!r})")
        if name in weights:
            raise ValueError(f"reward: scorer {name!r} given twice")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"reward: weight of {name!r} must be a number, got {raw!r}") from None
        if isinstance(raw, bool) or not math.isfinite(value):
            raise ValueError(f"reward: weight of {name!r} must be a finite number, got {raw!r}")
        weights[name] = value
    if all(w == 0 for w in weights.values()):
        raise ValueError(f"reward: every weight is zero ({weights})")
    return weights


@dataclass
class RewardOutput:
    """``total`` [B] float32 CPU (the weighted sum); ``terms`` the raw scores [B] of each scorer."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]

    def stats(self, prefix: str = "reward") -> dict[str, float]:
        """Mean / population std of the total and of each term (for logging)."""
        out = {f"{prefix}/mean": float(self.total.mean()), f"{prefix}/std": float(self.total.std(unbiased=False))}
        for name, values in self.terms.items():
            out[f"{prefix}/{name}/mean"] = float(values.mean())
            out[f"{prefix}/{name}/std"] = float(values.std(unbiased=False))
        return out


class Reward:
    """A weighted sum of scorers (see the module docstring for the formula).

    Args:
        scorers: ``{name: scorer}``.
        weights: ``{name: weight}`` with the same names.
        normalize: ``none`` | ``zscore`` | ``rank`` (the last two within prompt groups; ``group_size`` required).
        batch_size: images per scorer forward.
    """

    def __init__(self, scorers: Mapping[str, ScorerLike], weights: Mapping[str, float], *,
                 normalize: str = "none", batch_size: int = 32):
        if set(scorers) != set(weights):
            raise ValueError(f"reward: scorers {sorted(scorers)} and weights {sorted(weights)} differ")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"reward: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if batch_size < 1:
            raise ValueError(f"reward: batch_size must be >= 1, got {batch_size}")
        self.scorers = dict(scorers)
        self.weights = {name: float(weights[name]) for name in scorers}
        self.normalize = normalize
        self.batch_size = batch_size

    @property
    def names(self) -> list[str]:
        return list(self.scorers)

    def __call__(self, images: Any, prompts: Sequence[str], *, group_size: int | None = None) -> RewardOutput:
        """Score ``images`` (float [B,3,H,W] in [0, 1], PIL images, ...) against one prompt each."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        n = len(images)
        if len(prompts) != n:
            raise ValueError(f"reward: {n} images but {len(prompts)} prompts (one prompt per image)")
        if self.normalize != "none":
            if not group_size or group_size < 1 or n % group_size:
                raise ValueError(f"reward: normalize={self.normalize!r} needs group_size dividing the batch "
                                 f"({n} images, group_size {group_size})")
        terms = {name: scorer.score(images, prompts, batch_size=self.batch_size).float().cpu()
                 for name, scorer in self.scorers.items()}
        return RewardOutput(total=self.combine(terms, group_size=group_size).float(), terms=terms)

    def combine(self, terms: Mapping[str, torch.Tensor], *, group_size: int | None = None) -> torch.Tensor:
        """The total (float64 ``[B]``) of raw per-scorer scores ``terms`` (``{name: [B]}``, every scorer of this
        reward): what ``__call__`` returns as ``total`` (in float32), for scores computed earlier (``mmalign label``
        combines the raw scores it saved as it went)."""
        if set(terms) != set(self.scorers):
            raise ValueError(f"reward: terms {sorted(terms)} are not the scorers {sorted(self.scorers)}")
        n = len(next(iter(terms.values())))
        if self.normalize != "none" and (not group_size or group_size < 1 or n % group_size):
            raise ValueError(f"reward: normalize={self.normalize!r} needs group_size dividing the batch "
                             f"({n} images, group_size {group_size})")
        total = torch.zeros(n, dtype=torch.float64)
        for name in self.scorers:
            values = terms[name]
            if values.shape != (n,):
                raise ValueError(f"reward: scorer {name!r} returned shape {tuple(values.shape)}, expected ({n},)")
            if self.normalize != "none":
                values = normalize_within_prompt(values.view(-1, group_size), self.normalize).view(-1)
            total += self.weights[name] * values.double()
        return total

    def __repr__(self) -> str:
        return f"Reward({self.weights}, normalize={self.normalize!r})"


def load_reward(spec: str | Mapping[str, float] | Sequence[str], *,
                checkpoints: Mapping[str, str] | None = None,
                scorer_args: Mapping[str, Mapping[str, Any]] | None = None,
                device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                autocast: str | None = None, normalize: str = "none", batch_size: int = 32) -> Reward:
    """Load every scorer of ``spec`` with :func:`scorers.load_scorer` and return their :class:`Reward`.

    ``checkpoints`` maps a scorer name to its checkpoint; ``scorer_args`` to further ``load_scorer`` keyword
    arguments (card overrides, e.g. ``arch=`` or ``backbone_checkpoint=``). Names in either that are not in the
    spec are an error (a typo would otherwise be silently ignored).
    """
    from scorers.loading import load_scorer

    weights = parse_reward_spec(spec)
    checkpoints = dict(checkpoints or {})
    scorer_args = {k: dict(v) for k, v in (scorer_args or {}).items()}
    for what, table in (("checkpoints", checkpoints), ("scorer_args", scorer_args)):
        unknown = sorted(set(table) - set(weights))
        if unknown:
            raise ValueError(f"reward: {what} names {unknown}, which are not in the reward {sorted(weights)}")
    loaded = {}
    for name in weights:
        kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "autocast": autocast, **scorer_args.get(name, {})}
        if name in checkpoints:
            kwargs["checkpoint"] = checkpoints[name]
        loaded[name] = load_scorer(name, **kwargs)
    return Reward(loaded, weights, normalize=normalize, batch_size=batch_size)
