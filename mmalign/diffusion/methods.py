"""Step functions of the diffusion preference methods: per-sample errors → :mod:`mmalign.objectives` → loss.

Every step: build ``x0``/conditioning (:mod:`mmalign.diffusion.inputs`), sample ``t`` and noise, compute policy
errors with gradient and reference errors without, and hand *scores* to the modality-free objective. The score of
an image is ``-e/2`` (element-mean error ``e``), which makes ``preference_loss("sigmoid")`` the official
Diffusion-DPO loss ``-logsig(-(beta/2) * ((e_w - e_ref_w) - (e_l - e_ref_l)))``.

=========  =================================================================================================
method     what the step does (spec section; official code)
=========  =================================================================================================
dpo        pairs ``[w; l]``, shared t and noise; ``preference_loss(loss_type)`` (§1; SalesforceAIResearch/
           DiffusionDPO ``train.py``; hinge/ipo as the diffusers script's ``--loss_type``)
sft        winners only, independent t and noise; ``mean(e_w)`` (§1, official ``--sft``)
mapo       pairs, shared t and noise, no reference; ``mapo_loss`` (§2; mapo-t2i/mapo ``utils.compute_loss``)
dcpo       dpo whose winner and loser carry their own captions (§6; sahsaeedi/DCPO-T2I ``dcpo_trainer.py``)
rankdpo    k ranked images per prompt, shared t and noise per prompt; ``rankdpo_loss`` (§7, paper Alg. 2)
kto        unpaired images, independent t and noise; ``kto_loss`` with z0 = clamp(mean(rho), 0) over the batch
           (§8.1; jacklishufan/diffusion-kto ``train_kto_sd_v1.5.py``). ``method.beta`` is Diffusion-KTO's
           ``beta_dpo`` on ``g = e_ref - e``; with scores ``-e/2`` that is ``beta = 2 * beta_dpo`` for the core.
smpo       pairs, shared t, ReNoise-inversion noise, beta * kappa per pair (§3; ``mmalign.diffusion.smpo``)
inpo       pairs, shared t, DDIM-inversion noise (§4; ``mmalign.diffusion.inpo``)
ppd        pairs of many users, shared t and noise, user-conditioned policy vs the base UNet without the user branch
           (§5; ``mmalign.diffusion.ppd.step``)
=========  =================================================================================================

Diffusion IPO (``loss_type: ipo``; issue 16). With ``h = -(1/2)((e_w - e_l) - (e_ref_w - e_ref_l))`` the
official sigmoid loss is ``-logsig(beta h)`` (beta 5000), so ``h`` is the log-ratio margin of scores ``-e/2`` and
IPO (Azar et al. 2023; TRL ``(logits - 1/(2 beta))^2``) is ``(h - 1/(2 beta))^2`` with the **same** ``beta`` as
the sigmoid. The diffusers ``train_diffusion_dpo.py`` (huggingface/diffusers @ 58eb52c0, l.878-885) computes
``logits = ref_diff - model_diff = 2h`` with ``beta_dpo = beta/2`` (default 2500 = official 5000): its sigmoid
``-logsig(beta_dpo logits)`` and hinge ``relu(1 - beta_dpo logits)`` equal ours; its IPO line
``(logits - 1/(2 args.beta))^2`` cannot run (``args.beta`` is undefined); read as ``args.beta_dpo`` it is
``(2h - 1/beta)^2 = 4 (h - 1/(2 beta))^2``: the same minimiser ``h* = 1/(2 beta)``, 4x our loss (a constant
factor: 4x the gradients, about no change under Adam). ``method.beta`` therefore means the same thing for every
loss type — the official -(beta/2) convention — as the config documents.

Logged: ``loss``, ``implicit_acc`` (official: fraction with the DPO logit > 0), ``rewards/*`` from the objective,
``model_mse`` / ``ref_mse`` (official names), ``e_w``, ``e_l``, ``e_ref_w``, ``e_ref_l``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from mmalign import objectives
from mmalign.diffusion.adapter import DiffusionParts
from mmalign.diffusion.config import MethodConfig
from mmalign.diffusion.inpo import inpo_step
from mmalign.diffusion.inputs import InputBuilder
from mmalign.diffusion.ppd.step import ppd_step
from mmalign.diffusion.reference import ReferenceProvider, unwrap
from mmalign.diffusion.scores import TIMESTEP_WEIGHTS, model_errors, training_timesteps_and_noise
from mmalign.diffusion.smpo import smpo_step

Metrics = dict[str, Any]


@dataclass
class StepContext:
    """What every method step needs besides the policy and the batch."""

    parts: DiffusionParts
    inputs: InputBuilder
    reference: ReferenceProvider
    method: MethodConfig
    device: torch.device
    autocast: Callable[[], Any] = nullcontext

    @property
    def num_train_timesteps(self) -> int:
        return int(self.parts.scheduler.config.num_train_timesteps)

    def errors(self, unet, x0, noise, t, cond) -> torch.Tensor:
        weight = TIMESTEP_WEIGHTS[self.method.timestep_weight]
        with self.autocast():
            return model_errors(unet, self.parts, x0, noise, t, cond, weight)

    @torch.no_grad()
    def reference_errors(self, policy, x0, noise, t, cond) -> torch.Tensor:
        with self.reference.model(unwrap(policy)) as ref:
            return self.errors(ref, x0, noise, t, cond)

    def shared_noise(self, x0: torch.Tensor, groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return training_timesteps_and_noise(self.parts, groups, group_size, tuple(x0.shape[1:]), self.device)

    def independent_noise(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return training_timesteps_and_noise(self.parts, x0.shape[0], 1, tuple(x0.shape[1:]), self.device)


def _empty_step(policy) -> tuple[torch.Tensor, Metrics]:
    """A batch whose items were all unreadable: a zero loss that still touches the graph (DDP-safe)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    return sum(p.sum() * 0.0 for p in params[:1]), {}


def _error_metrics(e: torch.Tensor, e_ref: torch.Tensor | None, group_size: int = 2) -> Metrics:
    out: Metrics = {"model_mse": e.detach().mean()}
    e_w, e_l = e.detach().chunk(group_size)[0], e.detach().chunk(group_size)[-1]
    out.update({"e_w": e_w.mean(), "e_l": e_l.mean()})
    if e_ref is not None:
        r_w, r_l = e_ref.chunk(group_size)[0], e_ref.chunk(group_size)[-1]
        out.update({"ref_mse": e_ref.mean(), "e_ref_w": r_w.mean(), "e_ref_l": r_l.mean()})
    return out


def dpo_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """Diffusion-DPO (and DCPO: the batch already carries per-side captions)."""
    x0, cond = ctx.inputs(batch, ctx.device)
    t, noise = ctx.shared_noise(x0, batch["groups"], 2)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    e_w, e_l = e.chunk(2)
    r_w, r_l = e_ref.chunk(2)
    losses, metrics = objectives.preference_loss(
        ctx.method.loss_type, chosen=-0.5 * e_w, rejected=-0.5 * e_l, ref_chosen=-0.5 * r_w,
        ref_rejected=-0.5 * r_l, beta=ctx.method.beta,
    )
    inside = (-0.5 * ctx.method.beta * ((e_w - e_l) - (r_w - r_l))).detach()
    metrics.update(_error_metrics(e, e_ref), implicit_acc=(inside > 0).float().mean())
    return losses.mean(), metrics


def sft_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """Diffusion-SFT baseline: plain denoising loss on the preferred image only."""
    x0, cond = ctx.inputs(batch, ctx.device)
    groups = batch["groups"]
    x0_w, cond_w = x0[:groups], {k: v[:groups] for k, v in cond.items()}
    t, noise = ctx.independent_noise(x0_w)
    e_w = ctx.errors(policy, x0_w, noise, t, cond_w)
    return e_w.mean(), {"model_mse": e_w.detach().mean()}


def mapo_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """MaPO: reference-free, ``mean(e_w) - beta * mean(logsig(T * (g(e_w) - g(e_l))))``."""
    x0, cond = ctx.inputs(batch, ctx.device)
    t, noise = ctx.shared_noise(x0, batch["groups"], 2)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_w, e_l = e.chunk(2)
    losses, metrics = objectives.mapo_loss(
        e_w, e_l, beta=ctx.method.beta, snr_value=ctx.method.mapo_snr, num_train_timesteps=ctx.num_train_timesteps
    )
    metrics.update(_error_metrics(e, None))
    return losses.mean(), metrics


def rankdpo_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """RankDPO: k images per prompt (member-major layout), one t and one noise shared by the list."""
    x0, cond = ctx.inputs(batch, ctx.device)
    groups, k = batch["groups"], batch["group_size"]
    t, noise = ctx.shared_noise(x0, groups, k)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    scores, ref_scores = (-0.5 * e).view(k, groups).T, (-0.5 * e_ref).view(k, groups).T
    losses, metrics = objectives.rankdpo_loss(
        scores, ref_scores, batch["scores"].float(), beta=ctx.method.beta, rank_source=ctx.method.rank_source
    )
    metrics.update({"model_mse": e.detach().mean(), "ref_mse": e_ref.mean()})
    return losses.mean(), metrics


def kto_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """Diffusion-KTO on unpaired images with per-image t and noise; z0 from the matched samples of the batch."""
    x0, cond = ctx.inputs(batch, ctx.device)
    t, noise = ctx.independent_noise(x0)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    score, ref_score = -0.5 * e, -0.5 * e_ref
    losses, metrics = objectives.kto_loss(
        score, ref_score, batch["label"].bool(), beta=2.0 * ctx.method.beta, z0=_global_kto_z0(score, ref_score),
        lambda_d=ctx.method.kto_lambda_desirable, lambda_u=ctx.method.kto_lambda_undesirable,
    )
    # keep only keys present in every batch: the shared loop reduces one metrics vector across ranks
    metrics = {k: v for k, v in metrics.items() if k not in KTO_CONDITIONAL_METRICS}
    metrics.update({"model_mse": e.detach().mean(), "ref_mse": e_ref.mean()})
    return losses.mean(), metrics


KTO_CONDITIONAL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins")
"""kto_loss metrics that exist only when a batch has both labels (the *_sum and count/* ones always exist)."""


def _global_kto_z0(score: torch.Tensor, ref_score: torch.Tensor) -> torch.Tensor:
    """Diffusion-KTO reference point over the *global* batch: ``clamp(mean over all ranks of rho, min=0)``, detached
    (official: mean of the gathered batch). Single process: :func:`mmalign.objectives.kto_z0`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return objectives.kto_z0(score.detach(), ref_score.detach())
    rho = (score - ref_score).detach().float()
    total = torch.stack([rho.sum(), torch.tensor(float(rho.numel()), device=rho.device)])
    dist.all_reduce(total)
    return (total[0] / total[1]).clamp(min=0.0)


STEPS = {"dpo": dpo_step, "dcpo": dpo_step, "sft": sft_step, "mapo": mapo_step, "rankdpo": rankdpo_step,
         "kto": kto_step, "smpo": smpo_step, "inpo": inpo_step, "ppd": ppd_step}


def make_step_fn(ctx: StepContext, skip_counter: Any | None = None) -> Callable[[Any, dict[str, Any]], tuple[torch.Tensor, Metrics]]:
    """The ``step_fn(model, batch)`` for :func:`mmalign.train.train`; ``skip_counter`` (a
    :class:`mmalign.data.SkipCounter`) counts the readers' skipped items carried in ``batch["skipped"]``."""
    if ctx.method.name not in STEPS:
        raise ValueError(f"method.name: unknown method '{ctx.method.name}' ({', '.join(STEPS)})")
    method = STEPS[ctx.method.name]

    def step_fn(policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
        if skip_counter is not None and "skipped" in batch:
            skip_counter.update(batch)
        if not batch.get("groups"):
            return _empty_step(policy)
        return method(ctx, policy, batch)

    return step_fn
