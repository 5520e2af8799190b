"""RRPO — Refined Regularized Preference Optimization (Sarkar & Etemad, arXiv 2504.12083, NeurIPS 2025).

Official code ``pritamqu/RRPO`` @ a9055737, ``llava/losses.py`` / ``videochat2/losses.py``. With phrase ids
``s_t in {0, 1..N}`` on the completion tokens of the chosen ``y+`` and rejected ``y-`` responses (0 = not in a
differing sub-sequence) and ``delta(t) = log pi_theta(y_t|.) - log pi_ref(y_t|.)``:

* sub-sequence reward ``r_i(y) = beta * sum_{t: s_t = i} delta(t)``;
* margin ``u = sum_i [r_i(y+) - r_i(y-)] = beta * (sum_{t in y+, s_t>0} delta(t) - sum_{t in y-, s_t>0} delta(t))``
  — the code sums the phrase margins *inside one sigmoid* (not ``sum_i -logsig(u_i)``);
* token-wise KL on the chosen response over **all** its completion tokens, direction KL(ref || policy) with
  full-vocabulary distributions: ``D = sum_{t in C(y+)} sum_k p_ref(k|t) [log p_ref(k|t) - log p_theta(k|t)]``;
* ``L = -logsig(u) + alpha * D`` per example; the batch loss is the mean.

The project page writes ``-E[logsig(u) + alpha D]`` (it would reward divergence); the code *adds* ``+alpha D`` and
so does this module. The rejected-side KL is only logged. Unlike the reference code (``softmax(ref).log()``, which
gives ``0 * -inf = NaN`` when a reference probability underflows), the KL here is computed from two
``log_softmax`` in float32, chunked over tokens, with ``p log p`` taken as 0 where ``p = 0``.

Per-model defaults from the official run scripts (``scripts/*/run.sh``) are in :data:`RRPO_DEFAULTS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RRPO_DEFAULTS: dict[str, dict[str, float]] = {
    "llava_video": {"alpha": 0.01, "beta": 0.1, "lr": 5e-6},
    "longvu": {"alpha": 0.05, "beta": 0.5, "lr": 5e-6},
    "videochat2": {"alpha": 0.01, "beta": 0.9, "lr": 2e-5},
    "default": {"alpha": 0.1, "beta": 0.1, "lr": 5e-6},
}
"""alpha (``loss_alpha``), beta (``loss_beta``) and LR of the official run scripts; ``default`` is the
``TrainingArguments`` default of the RRPO repo (alpha 0.1, beta 0.1)."""


def rrpo_defaults(model_family: str) -> dict[str, float]:
    """alpha/beta/lr for ``model_family`` (``llava_video``, ``longvu``, ``videochat2``; else ``default``)."""
    return dict(RRPO_DEFAULTS.get(model_family, RRPO_DEFAULTS["default"]))


def token_kl(
    ref_logits: torch.Tensor, policy_logits: torch.Tensor, mask: torch.Tensor, chunk_size: int = 256
) -> torch.Tensor:
    """Per-example ``sum_t mask_t * KL(p_ref(.|t) || p_theta(.|t))`` from logits ``[B, T, V]``; returns ``[B]``.

    Computed in float32 log space, ``chunk_size`` positions at a time (never a full ``B x T x V`` float32 copy
    of both distributions at once): ``sum_k exp(lr_k) * (lr_k - lp_k)`` with ``lr, lp = log_softmax`` of the
    reference and policy logits, and the term set to 0 where the reference probability is exactly 0 (so
    ``-inf`` reference logits never give NaN). Gradients flow to ``policy_logits`` only if it requires them.
    """
    if ref_logits.shape != policy_logits.shape:
        raise ValueError(f"ref_logits {tuple(ref_logits.shape)} and policy_logits {tuple(policy_logits.shape)} differ")
    if mask.shape != ref_logits.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} must be [B, T] = {tuple(ref_logits.shape[:2])}")
    batch, length, _ = ref_logits.shape
    total = policy_logits.new_zeros(batch, dtype=torch.float32)
    mask = mask.bool()
    for start in range(0, length, chunk_size):
        sl = slice(start, start + chunk_size)
        m = mask[:, sl]
        if not bool(m.any()):
            continue
        lr = F.log_softmax(ref_logits[:, sl][m].float(), dim=-1)  # [n, V] only masked positions
        lp = F.log_softmax(policy_logits[:, sl][m].float(), dim=-1)
        p = lr.exp()
        per_vocab = torch.where(p > 0, p * (lr - lp), torch.zeros_like(p))
        per_pos = per_vocab.sum(-1)
        rows = torch.arange(batch, device=m.device)[:, None].expand_as(m)[m]
        total = total.index_add(0, rows, per_pos)
    return total


def phrase_log_ratio(
    policy_token_logps: torch.Tensor, ref_token_logps: torch.Tensor, phrase_ids: torch.Tensor
) -> torch.Tensor:
    """``sum_{t: s_t > 0} (log pi_theta - log pi_ref)`` per example; inputs ``[B, T]`` aligned with the labels.

    Positions with phrase id 0 (or negative padding ids such as -100) contribute nothing, whatever their
    log-probs (masked with ``where``, so ``-inf`` at padding cannot leak NaN)."""
    keep = phrase_ids > 0
    delta = policy_token_logps.float() - ref_token_logps.float()
    return torch.where(keep, delta, torch.zeros_like(delta)).sum(-1)


def rrpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_phrase_ids: torch.Tensor,
    rejected_phrase_ids: torch.Tensor,
    chosen_kl: torch.Tensor,
    beta: float,
    alpha: float,
    rejected_kl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example RRPO loss ``-logsig(u) + alpha * KL_chosen`` and metrics.

    Args:
        policy_chosen_logps, ref_chosen_logps: per-token log-probs ``[B, T+]`` of the chosen completion tokens
            (label-aligned, i.e. already shifted) under the policy / reference.
        policy_rejected_logps, ref_rejected_logps: the same for the rejected response, ``[B, T-]``.
        chosen_phrase_ids, rejected_phrase_ids: phrase id per token (0 or negative = outside every differing
            sub-sequence), same shapes.
        chosen_kl: ``[B]`` token-wise KL(ref || policy) summed over all chosen completion tokens
            (:func:`token_kl`).
        rejected_kl: optional ``[B]``, only logged (as in the official code).

    Returns ``(losses [B], metrics)``; metrics follow TRL's names (``rewards/chosen`` = ``beta * sum`` over the
    chosen phrases, ...) plus ``kl/chosen`` (and ``kl/rejected``).
    """
    chosen_ratio = phrase_log_ratio(policy_chosen_logps, ref_chosen_logps, chosen_phrase_ids)
    rejected_ratio = phrase_log_ratio(policy_rejected_logps, ref_rejected_logps, rejected_phrase_ids)
    chosen_rewards = beta * chosen_ratio
    rejected_rewards = beta * rejected_ratio
    margin = chosen_rewards - rejected_rewards
    kl = chosen_kl.float()
    losses = -F.logsigmoid(margin) + alpha * kl
    metrics = {
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/margins": margin.detach().mean(),
        "rewards/accuracies": (margin.detach() > 0).float().mean(),
        "kl/chosen": kl.detach().mean(),
    }
    if rejected_kl is not None:
        metrics["kl/rejected"] = rejected_kl.detach().float().mean()
    return losses, metrics
