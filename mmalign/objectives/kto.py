"""KTO (Kahneman-Tversky Optimization) on unpaired per-example scores, with its reference point z0.

Per example, with the log-ratio ``rho = S_theta(y|x) - S_ref(y|x)`` and a detached reference point ``z0``:

* desirable   (label True):  ``lambda_D * (1 - sigmoid(beta * (rho - z0)))``
* undesirable (label False): ``lambda_U * (1 - sigmoid(beta * (z0 - rho)))``

Sources: Ethayarajh et al. 2024, Eq. (7); TRL 1.16 ``trl/trainer/kto_trainer.py::KTOTrainer._compute_loss``
(``loss_type="kto"``); Diffusion-KTO (Li et al., NeurIPS 2024) ``jacklishufan/diffusion-kto``
``train_kto_sd_v1.5.py`` (``--halo sigmoid``, ``bce_offset none``).

Differences from TRL, stated explicitly:

* TRL returns the losses re-ordered as ``cat(desirable, undesirable)``; here ``losses[i]`` belongs to example ``i``
  (same values, same mean).
* The reference point: TRL estimates ``z0 = clamp(mean_ranks(mean_batch(S_theta(y'|x) - S_ref(y'|x))), min=0)``
  over *mismatched* pairs (completions rotated by one within the batch, ``KL_completion_ids``), detached and
  averaged over ranks with ``accelerator.gather_for_metrics`` *before* the clamp. :func:`kto_z0` computes the
  single-process form; **gathering across ranks is the caller's job**: gather the per-example differences (or the
  per-rank means, equal per-rank batch sizes) first and then call :func:`kto_z0` on the gathered tensors, or pass
  ``z0`` directly.
* Diffusion-KTO uses the *matched* samples of the batch for its reference point: per rank
  ``mean(e_ref - e_theta)``, averaged over ranks (``accelerator.reduce(..., "mean")``), then clamped at 0 and
  detached: call ``kto_z0(policy, reference)`` on the (gathered) matched scores. Its ``g = e_ref - e_theta`` equals ``2 * rho`` with this package's diffusion score ``s = -e/2``, so
  Diffusion-KTO's ``beta_dpo`` corresponds to ``beta = 2 * beta_dpo`` here (default 1000 → 2000).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign.objectives.pairwise import Metrics, check_scores


def kto_z0(kl_policy: torch.Tensor, kl_reference: torch.Tensor) -> torch.Tensor:
    """KTO reference point ``z0 = max(0, mean(kl_policy - kl_reference))``, detached (a 0-dim tensor).

    ``kl_policy``/``kl_reference``: policy and reference scores of mismatched (x, y') pairs (TRL KTO) or of the
    matched samples (Diffusion-KTO). In multi-process training, gather these across ranks before calling (TRL
    averages over ranks *before* clamping; clamping per rank and then averaging is not the same).
    """
    kl_policy = check_scores("kl_policy", kl_policy, None)
    kl_reference = check_scores("kl_reference", kl_reference, kl_policy.shape[0])
    if kl_policy.numel() == 0:
        raise ValueError("kto_z0 needs at least one (policy, reference) score pair")
    return (kl_policy - kl_reference).mean().detach().clamp(min=0.0)


def kto_loss(
    policy: torch.Tensor,
    reference: torch.Tensor,
    desirable: torch.Tensor,
    *,
    beta: float,
    kl_policy: torch.Tensor | None = None,
    kl_reference: torch.Tensor | None = None,
    z0: torch.Tensor | float | None = None,
    lambda_d: float = 1.0,
    lambda_u: float = 1.0,
) -> tuple[torch.Tensor, Metrics]:
    """Per-example KTO loss (module docstring) and metrics.

    Args:
        policy, reference: policy / reference scores of each example, shape ``[B]``.
        desirable: bool (or 0/1) tensor ``[B]``: True for desirable (chosen) examples.
        beta: inverse temperature (TRL default 0.1; see module docstring for the Diffusion-KTO convention).
        kl_policy, kl_reference: scores used for the reference point, see :func:`kto_z0`.
        z0: the reference point given directly (e.g. already gathered across ranks, or 0 for
            ``apo_zero_unpaired``-like use); takes precedence over ``kl_policy``/``kl_reference``.
        lambda_d, lambda_u: weights of desirable / undesirable examples (TRL ``desirable_weight`` /
            ``undesirable_weight``; keep ``lambda_d n_d / (lambda_u n_u)`` in [1, 4/3]).

    Returns:
        ``(losses [B], metrics)``: ``kl`` (z0), ``rewards/chosen`` and ``rewards/rejected`` (mean ``beta * rho`` over
        desirable / undesirable examples, present only when that group is non-empty), their sums and counts
        (``rewards/chosen_sum``, ``count/chosen``, ... for exact aggregation across steps and ranks), and
        ``rewards/margins`` when both groups are present.
    """
    policy = check_scores("policy", policy, None)
    batch = policy.shape[0]
    reference = check_scores("reference", reference, batch)
    if not isinstance(desirable, torch.Tensor) or desirable.shape != (batch,):
        raise ValueError(f"desirable must be a bool tensor of shape [{batch}]")
    desirable = desirable.to(device=policy.device).bool()

    if z0 is None:
        if kl_policy is None or kl_reference is None:
            raise ValueError(
                "kto_loss needs the reference point: pass z0, or kl_policy and kl_reference "
                "(scores of mismatched pairs for TRL KTO; the matched scores for Diffusion-KTO)"
            )
        z0 = kto_z0(kl_policy, kl_reference)
    z0 = torch.as_tensor(z0, dtype=torch.float32, device=policy.device).detach()

    logratios = policy - reference
    desirable_losses = lambda_d * (1.0 - F.sigmoid(beta * (logratios - z0)))
    undesirable_losses = lambda_u * (1.0 - F.sigmoid(beta * (z0 - logratios)))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)

    rewards = (beta * logratios).detach()
    n_chosen = desirable.sum()
    n_rejected = (~desirable).sum()
    metrics: Metrics = {
        "kl": z0.clone(),
        "count/chosen": n_chosen.float(),
        "count/rejected": n_rejected.float(),
        "rewards/chosen_sum": rewards[desirable].sum(),
        "rewards/rejected_sum": rewards[~desirable].sum(),
    }
    if int(n_chosen) > 0:
        metrics["rewards/chosen"] = rewards[desirable].mean()
    if int(n_rejected) > 0:
        metrics["rewards/rejected"] = rewards[~desirable].mean()
    if int(n_chosen) > 0 and int(n_rejected) > 0:
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses, metrics
