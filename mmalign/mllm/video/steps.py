"""Training steps for video LLMs: ``step_fn(model, batch) -> (loss, metrics)`` for :func:`mmalign.training.loop.train`.

Each step runs the policy forward on a batch built by :class:`mmalign.mllm.video.batch.VideoRowCollator`
(rows ``[first ; second]``), the reference forward under ``no_grad``, and one objective:

* ``sft``: token-mean NLL of the (single-row) completions;
* ``dpo`` (TEMPLE): :func:`mmalign.objectives.preference_loss` on summed completion log-probs of
  ``[chosen ; rejected]`` (same video), plus ``sft_weight`` x token-mean NLL of the chosen rows — TEMPLE ran
  ms-swift <= 3.7 whose ``rpo_alpha`` defaulted to 1.0 (spec §3);
* ``vdpo``: the same loss on ``[response | clean video ; response | perturbed video]`` (spec §7). No parity test
  against official code exists because none is public: PaMi-VDPO (Ding et al., arXiv 2504.05810) released no
  code that repository, code or issue search could find (the two "VDPO" repositories in the index are unrelated
  projects); the loss is the sigmoid core, tested against TRL's, on a pair whose rejected row is the augmented clip;
* ``rrpo``: :func:`mmalign.objectives.rrpo.rrpo_loss` with phrase ids and the chosen-side token KL (spec §2).

Reference: a frozen model passed as ``ref_model``, or, when ``ref_model`` is None, the same (peft) model with
its adapters disabled — which after a curriculum stage merge is the previous stage's policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mmalign.mllm.forward import forward_logits, reference_mode
from mmalign.mllm.video.batch import score_logits, shifted
from mmalign.objectives import preference_loss
from mmalign.objectives.rrpo import rrpo_loss, token_kl

StepFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, Any]]]


def reference_logits(model: torch.nn.Module, batch: dict, ref_model: torch.nn.Module | None = None) -> torch.Tensor:
    with reference_mode(model, ref_model) as ref:  # no_grad, adapters off (eval) or the frozen copy
        return forward_logits(ref, batch)


def sft_step(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
    logps, scored = score_logits(forward_logits(model, batch), batch)
    n = scored.sum().clamp(min=1)
    loss = -logps.sum() / n
    return loss, {"nll": loss.detach(), "tokens": n.float()}


def make_pair_step(beta: float, loss_type: str = "sigmoid", sft_weight: float = 0.0,
                   ref_model: torch.nn.Module | None = None, **loss_options: Any) -> StepFn:
    """DPO-family step on ``[first ; second]`` rows (TEMPLE DPO and VDPO share it)."""

    def step(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        logps, scored = score_logits(forward_logits(model, batch), batch)
        ref_logps, _ = score_logits(reference_logits(model, batch, ref_model), batch)
        seq, ref_seq, lengths = logps.sum(-1), ref_logps.sum(-1), scored.sum(-1)
        chosen, rejected = seq.chunk(2)
        ref_chosen, ref_rejected = ref_seq.chunk(2)
        len_chosen, len_rejected = lengths.chunk(2)
        losses, metrics = preference_loss(
            loss_type, chosen=chosen, rejected=rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected,
            beta=beta, chosen_len=len_chosen, rejected_len=len_rejected, chosen_nll=-chosen,
            sft_weight=sft_weight, **loss_options,
        )
        metrics = dict(metrics)
        metrics["logps/chosen"] = chosen.detach().mean()
        metrics["logps/rejected"] = rejected.detach().mean()
        return losses.mean(), metrics

    return step


def make_rrpo_step(beta: float, alpha: float, ref_model: torch.nn.Module | None = None,
                   kl_chunk_size: int = 256) -> StepFn:
    """RRPO step: phrase-level rewards inside one sigmoid + alpha x token-wise KL(ref || policy) on chosen rows."""

    def step(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = forward_logits(model, batch)
        ref_logits = reference_logits(model, batch, ref_model)
        logps, scored = score_logits(logits, batch)
        ref_logps, _ = score_logits(ref_logits, batch)
        phrase = shifted(batch, "phrase_ids") * scored
        n = logits.shape[0] // 2
        kl_chosen = token_kl(ref_logits[:n, :-1], logits[:n, :-1], scored[:n], chunk_size=kl_chunk_size)
        with torch.no_grad():  # logged only, as in the official code
            kl_rejected = token_kl(ref_logits[n:, :-1], logits[n:, :-1], scored[n:], chunk_size=kl_chunk_size)
        pc, pr = logps.chunk(2)
        rc, rr = ref_logps.chunk(2)
        ic, ir = phrase.chunk(2)
        losses, metrics = rrpo_loss(
            policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc, ref_rejected_logps=rr,
            chosen_phrase_ids=ic, rejected_phrase_ids=ir, chosen_kl=kl_chosen, rejected_kl=kl_rejected,
            beta=beta, alpha=alpha,
        )
        return losses.mean(), metrics

    return step
