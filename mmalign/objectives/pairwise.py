"""Pairwise preference losses on per-example scores: the DPO family, SimPO, ORPO, BCO-pair and the SFT/NLL term.

A *score* is whatever the model family produces for one (condition, sample):

* language / vision-language / video LLMs: the summed completion log-probability
  ``S(y|x) = sum_t log pi(y_t | x, y_<t)`` (see :mod:`mmalign.mllm.logprobs`);
* diffusion models: minus half the element-mean denoising error, ``s = -e/2`` with
  ``e = mean_{C,H,W} (f(x_t, c, t) - target)^2``.

With ``rho = S_theta - S_ref`` (log-ratio) and ``h = rho_w - rho_l`` (pairwise margin), the official
Diffusion-DPO loss ``-logsig(-beta/2 * ((e_w - e_l) - (e_ref_w - e_ref_l)))`` (SalesforceAIResearch/DiffusionDPO
``train.py``, beta=5000) is exactly ``kind="sigmoid"`` here: ``beta * h = -beta/2 * ((e_w - e_ref_w) - (e_l - e_ref_l))``.
(The diffusers SD1.5 LoRA script's ``beta_dpo=2500`` without the 1/2 is the same loss as beta=5000 here.)

Every loss is returned per example (shape ``[B]``); the batch loss is ``losses.mean()``. All arithmetic is done in
float32 at least (inputs are upcast; float64 is kept), which matters for diffusion scores at beta=5000. The metrics dict holds detached
scalar tensors named as TRL logs them (``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies``; ``beta * rho`` for reference-based kinds as TRL's DPOTrainer, ``beta * m`` (mean log-prob)
for SimPO/ORPO as TRL's CPO/ORPO trainers) plus ``logits``, the mean of the quantity inside the link function
(``beta h``; ``h_ipo`` for IPO; ``beta rho_w`` for BCO-pair; ``beta (m_w - m_l) - gamma`` for SimPO; the log odds
ratio for ORPO).

Formulas (TRL 1.16 ``trl/trainer/dpo_trainer.py::DPOTrainer._compute_loss`` unless noted):

=============  ==========================================================================================
kind           per-example loss
=============  ==========================================================================================
sigmoid        ``-logsig(beta h)``                                                        (DPO, Rafailov et al.)
cdpo           ``-(1-eps) logsig(beta h) - eps logsig(-beta h)``  (conservative DPO; old TRL ``sigmoid`` with
               label smoothing, also SimPO/MM-RLHF code. Current TRL ``sigmoid`` ignores label smoothing.)
robust         ``[-(1-eps) logsig(beta h) + eps logsig(-beta h)] / (1 - 2 eps)``, eps in [0, 0.5)
               (Chowdhury et al. 2024; TRL ``robust``)
hinge          ``relu(1 - beta h)``                                                (SLiC; TRL ``hinge``)
ipo            ``(h_ipo - 1/(2 beta))^2`` with ``h_ipo = rho_w/|y_w| - rho_l/|y_l|`` when lengths are given
               (TRL normalises each side's log-ratio by its completion length, clamped at 1), else ``h``
bco_pair       ``-logsig(beta rho_w) - logsig(-beta rho_l)``       (TRL ``bco_pair``; no running delta)
simpo          ``-(1-eps) logsig(beta (m_w - m_l) - gamma) - eps logsig(-(beta (m_w - m_l) - gamma))``
               with mean log-probs ``m = S/|y|``; reference-free (SimPO repo ``simpo_trainer.py``; TRL
               ``CPOTrainer`` ``loss_type="simpo"`` without its default ``cpo_alpha`` NLL term)
orpo           ``-m_w - beta logsig(log_odds_w - log_odds_l)``, ``log_odds = m - log(1 - exp(m))``,
               ``beta`` is ORPO's lambda; reference-free (Hong et al. 2024; TRL ``ORPOTrainer.odds_ratio_loss``);
               mean log-probs must be < 0 (a mean log-prob of exactly 0 gives inf, as in TRL). ``-m_w`` is
               the ORPO paper's per-example NLL; TRL's ORPOTrainer uses the batch token-mean NLL instead: to get
               that, pass ``orpo_nll=False, sft_weight=1, chosen_nll=-S_w`` with lengths (SFT term below)
=============  ==========================================================================================

Composable SFT/NLL term: ``+ sft_weight * NLL(y_w)`` (RPO, Pang et al. 2024 = ``sigmoid`` + ``sft_weight`` NLL;
TRL ``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, alpha]``). See :func:`sft_term` for the reduction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign.choices import PREFERENCE_KINDS, REFERENCE_FREE_KINDS, REFERENCE_KINDS

Metrics = dict[str, torch.Tensor]


def check_scores(name: str, value: torch.Tensor | None, batch: int | None) -> torch.Tensor | None:
    """Validate a per-example tensor of shape ``[B]`` and upcast it to at least float32 (float64 stays float64)."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B], got {type(value).__name__}")
    if value.dim() != 1:
        raise ValueError(f"{name} must have shape [B] (one score per example), got shape {tuple(value.shape)}")
    if batch is not None and value.shape[0] != batch:
        raise ValueError(f"{name} has {value.shape[0]} examples, expected {batch} (the size of `chosen`)")
    return value.to(torch.promote_types(value.dtype, torch.float32))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable on both ends (Maechler 2012: expm1 near 0, log1p far away)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pairwise_rewards_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> Metrics:
    """TRL-named reward metrics (detached scalar tensors) from per-example implicit rewards."""
    chosen_rewards = chosen_rewards.detach()
    rejected_rewards = rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
    }


def _smoothed_logsigmoid_loss(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """``-(1-eps) logsig(z) - eps logsig(-z)`` (binary cross-entropy against the soft label ``1-eps``)."""
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def _mean_scores(scores: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Length-normalise summed scores (TRL clamps the length at 1); identity when no lengths are given."""
    if lengths is None:
        return scores
    return scores / lengths.float().clamp(min=1.0)


def sft_term(
    chosen_nll: torch.Tensor,
    chosen_len: torch.Tensor | None = None,
    *,
    reduction: str | None = None,
) -> torch.Tensor:
    """The SFT/NLL term on the chosen samples, returned per example (shape ``[B]``).

    ``reduction``:

    * ``"tokens"`` (default when ``chosen_len`` is given): ``chosen_nll`` holds each example's *summed* token NLL
      and the term is the token-mean over the whole batch, ``sum_i nll_i / sum_i len_i``, broadcast to every
      example. This is TRL's ``sft`` loss type (``-chosen_per_token_logps[chosen_mask].mean()``), so
      ``losses.mean()`` reproduces TRL's batch loss exactly.
    * ``"example"`` (default without lengths): ``chosen_nll`` is used per example as given (e.g. a per-example
      mean NLL as in the RPO paper / ms-swift ``rpo_alpha``, or the chosen denoising error for diffusion MaPO-style
      SFT terms).
    """
    nll = chosen_nll.to(torch.promote_types(chosen_nll.dtype, torch.float32))
    if reduction is None:
        reduction = "tokens" if chosen_len is not None else "example"
    if reduction == "example":
        return nll
    if reduction == "tokens":
        if chosen_len is None:
            raise ValueError("sft_reduction='tokens' needs chosen_len (number of completion tokens per example)")
        total = nll.sum() / chosen_len.float().sum().clamp(min=1.0)
        return total.expand_as(nll)
    raise ValueError(f"Unknown sft_reduction {reduction!r}; expected 'tokens' or 'example'")


def preference_loss(
    kind: str,
    *,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None = None,
    ref_rejected: torch.Tensor | None = None,
    beta: float | torch.Tensor,
    chosen_len: torch.Tensor | None = None,
    rejected_len: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    gamma: float = 0.0,
    chosen_nll: torch.Tensor | None = None,
    sft_weight: float = 0.0,
    **options,
) -> tuple[torch.Tensor, Metrics]:
    """Per-example pairwise preference loss on scores, plus TRL-named metrics.

    Args:
        kind: one of ``sigmoid, cdpo, robust, hinge, ipo, bco_pair`` (reference-based) or ``simpo, orpo``
            (reference-free). See the module docstring for every formula and its source.
        chosen, rejected: policy scores of the preferred / dispreferred sample, shape ``[B]`` (summed completion
            log-probs for LMs; ``-e/2`` for diffusion, see module docstring).
        ref_chosen, ref_rejected: reference-model scores, shape ``[B]``; required by reference-based kinds.
        beta: inverse temperature (IPO's tau; ORPO's lambda; Diffusion-DPO's beta=5000 in the official convention):
            a float, or a ``[B]`` tensor of per-example betas (e.g. MM-RLHF's dynamic reward scaling; pass it
            detached unless gradients through beta are intended).
        chosen_len, rejected_len: completion lengths ``[B]``. ``ipo`` normalises each log-ratio by its length
            (TRL); ``simpo``/``orpo`` treat the scores as *sums* and divide by the lengths to get mean log-probs
            (without lengths the scores are taken as already averaged). Other kinds ignore them, except the SFT term.
        label_smoothing: eps of ``cdpo``, ``robust`` (must lie in [0, 0.5)) and ``simpo``.
        gamma: SimPO's target margin (``simpo`` only).
        chosen_nll: NLL of the chosen sample for the SFT term (see :func:`sft_term`; for LMs pass
            ``-chosen`` with summed log-probs and ``chosen_len``).
        sft_weight: weight of the SFT term (RPO alpha). The term is added when ``sft_weight != 0``.
        options: ``sft_reduction`` (``"tokens"|"example"``, see :func:`sft_term`); ``orpo_nll`` (bool, default
            True: ORPO's own ``-m_w`` likelihood term; set False and use the SFT term to get TRL's batch token-mean
            NLL instead).

    Returns:
        ``(losses [B], metrics)``; metrics are detached scalar tensors.
    """
    sft_reduction = options.pop("sft_reduction", None)
    orpo_nll = bool(options.pop("orpo_nll", True))
    if options:
        raise TypeError(f"preference_loss got unknown options {sorted(options)}")
    if kind not in PREFERENCE_KINDS:
        raise ValueError(f"Unknown preference loss kind {kind!r}; expected one of {list(PREFERENCE_KINDS)}")

    chosen = check_scores("chosen", chosen, None)
    batch = chosen.shape[0]
    rejected = check_scores("rejected", rejected, batch)
    ref_chosen = check_scores("ref_chosen", ref_chosen, batch)
    ref_rejected = check_scores("ref_rejected", ref_rejected, batch)
    chosen_len = check_scores("chosen_len", chosen_len, batch)
    rejected_len = check_scores("rejected_len", rejected_len, batch)
    chosen_nll = check_scores("chosen_nll", chosen_nll, batch)
    if isinstance(beta, torch.Tensor):
        if beta.dim() == 1:
            beta = check_scores("beta", beta, batch)
        elif beta.dim() == 0:
            beta = beta.to(torch.promote_types(beta.dtype, torch.float32))
        else:
            raise ValueError(f"beta must be a float, a 0-dim tensor or a [B] tensor, got shape {tuple(beta.shape)}")
    if (chosen_len is None) != (rejected_len is None):
        raise ValueError("pass both chosen_len and rejected_len, or neither")

    if kind in REFERENCE_KINDS:
        if ref_chosen is None or ref_rejected is None:
            raise ValueError(
                f"kind={kind!r} is reference-based: pass ref_chosen and ref_rejected (reference-model scores); "
                f"reference-free kinds are {list(REFERENCE_FREE_KINDS)}"
            )
        losses, logits, metrics = _reference_loss(
            kind, chosen, rejected, ref_chosen, ref_rejected, beta, chosen_len, rejected_len, label_smoothing
        )
    else:
        losses, logits, metrics = _reference_free_loss(
            kind, chosen, rejected, beta, chosen_len, rejected_len, label_smoothing, gamma, orpo_nll
        )
    metrics["logits"] = logits.detach().mean()

    if sft_weight != 0.0:
        if chosen_nll is None:
            raise ValueError("sft_weight != 0 needs chosen_nll (NLL of the chosen samples)")
        sft = sft_term(chosen_nll, chosen_len, reduction=sft_reduction)
        losses = losses + sft_weight * sft
        metrics["sft_loss"] = sft.detach().mean()
    return losses, metrics


def _reference_loss(
    kind: str,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float | torch.Tensor,
    chosen_len: torch.Tensor | None,
    rejected_len: torch.Tensor | None,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    chosen_logratios = chosen - ref_chosen
    rejected_logratios = rejected - ref_rejected
    margin = chosen_logratios - rejected_logratios
    logits = beta * margin
    if kind == "sigmoid":
        losses = -F.logsigmoid(logits)
    elif kind == "cdpo":
        losses = _smoothed_logsigmoid_loss(logits, label_smoothing)
    elif kind == "robust":
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"robust loss needs label_smoothing in [0, 0.5), got {label_smoothing}")
        clean = -(1.0 - label_smoothing) * F.logsigmoid(logits)
        flipped = -label_smoothing * F.logsigmoid(-logits)
        losses = (clean - flipped) / (1.0 - 2.0 * label_smoothing)
    elif kind == "hinge":
        losses = torch.relu(1.0 - logits)
    elif kind == "ipo":
        ipo_margin = _mean_scores(chosen_logratios, chosen_len) - _mean_scores(rejected_logratios, rejected_len)
        logits = ipo_margin
        losses = (ipo_margin - 1.0 / (2.0 * beta)) ** 2
    elif kind == "bco_pair":
        logits = beta * chosen_logratios
        losses = -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(kind)
    metrics = pairwise_rewards_metrics(beta * chosen_logratios, beta * rejected_logratios)
    return losses, logits, metrics


def _reference_free_loss(
    kind: str,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    beta: float | torch.Tensor,
    chosen_len: torch.Tensor | None,
    rejected_len: torch.Tensor | None,
    label_smoothing: float,
    gamma: float,
    orpo_nll: bool,
) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    mean_chosen = _mean_scores(chosen, chosen_len)
    mean_rejected = _mean_scores(rejected, rejected_len)
    if kind == "simpo":
        logits = beta * (mean_chosen - mean_rejected) - gamma
        losses = _smoothed_logsigmoid_loss(logits, label_smoothing)
        metrics = pairwise_rewards_metrics(beta * mean_chosen, beta * mean_rejected)
    elif kind == "orpo":
        logits = (mean_chosen - mean_rejected) - (log1mexp(mean_chosen) - log1mexp(mean_rejected))
        ratio = F.logsigmoid(logits)
        losses = -beta * ratio
        if orpo_nll:
            losses = losses - mean_chosen
        metrics = pairwise_rewards_metrics(beta * mean_chosen, beta * mean_rejected)
        metrics["log_odds_ratio"] = ratio.detach().mean()
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(kind)
    return losses, logits, metrics
