"""What every diffusion method step shares: :class:`StepContext`, :func:`dpo_terms` and the step dispatch.

The steps themselves are one module each (:mod:`mmalign.diffusion.steps`, PPD's in :mod:`mmalign.diffusion.ppd`),
named by the method registry (:mod:`mmalign.diffusion.registry`).

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
mapo       pairs, shared t and noise, no reference; ``mapo_loss`` with ``method.mapo.beta`` (§2; mapo-t2i/mapo
           ``utils.compute_loss``)
dcpo       dpo whose winner and loser carry their own captions (§6; sahsaeedi/DCPO-T2I ``dcpo_trainer.py``)
rankdpo    k ranked images per prompt, shared t and noise per prompt; ``rankdpo_loss`` (§7, paper Alg. 2)
kto        unpaired images, independent t and noise; ``kto_loss`` with z0 = clamp(mean(rho), 0) over the batch
           (§8.1; jacklishufan/diffusion-kto ``train_kto_sd_v1.5.py``). ``method.kto.beta`` is Diffusion-KTO's
           ``beta_dpo`` on ``g = e_ref - e``; with scores ``-e/2`` that is ``beta = 2 * beta_dpo`` for the core.
smpo       pairs, shared t, ReNoise-inversion noise, beta * kappa per pair (§3; ``steps/smpo.py``)
inpo       pairs, shared t, DDIM-inversion noise (§4; ``steps/inpo.py``)
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
from mmalign.diffusion.inputs import InputBuilder
from mmalign.diffusion.reference import ReferenceProvider, unwrap
from mmalign.diffusion.registry import MethodConfig, method_spec
from mmalign.diffusion.scores import TIMESTEP_WEIGHTS, model_errors, training_timesteps_and_noise

Metrics = dict[str, Any]


@dataclass
class StepContext:
    """What every method step needs besides the policy and the batch; ``options`` is the method's own section
    (``method.<name>``)."""

    parts: DiffusionParts
    inputs: InputBuilder
    reference: ReferenceProvider
    method: MethodConfig
    device: torch.device
    autocast: Callable[[], Any] = nullcontext

    @property
    def options(self) -> Any:
        return getattr(self.method, self.method.name, None)

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


def dpo_terms(e: torch.Tensor, e_ref: torch.Tensor, beta: float, loss_type: str = "sigmoid",
              beta_scale: torch.Tensor | None = None, **loss_options: Any) -> tuple[torch.Tensor, Metrics]:
    """Diffusion-DPO on ``[w; l]`` stacked per-sample errors ``e`` (policy) and ``e_ref`` (reference): the
    per-pair losses ``preference_loss(loss_type)`` on scores ``-e/2`` with ``beta`` (times ``beta_scale`` per pair:
    SmPO's kappa) and the logged metrics — the objective's ``rewards/*``, ``implicit_acc`` (official: the fraction
    with ``-(beta/2)((e_w - e_ref_w) - (e_l - e_ref_l)) > 0``), ``model_mse``, ``ref_mse``, ``e_w`` ... ``e_ref_l``.
    ``loss_options``: e.g. ``label_smoothing`` of cdpo / robust."""
    e_w, e_l = e.chunk(2)
    r_w, r_l = e_ref.chunk(2)
    losses, metrics = objectives.preference_loss(
        loss_type, chosen=-0.5 * e_w, rejected=-0.5 * e_l, ref_chosen=-0.5 * r_w, ref_rejected=-0.5 * r_l,
        beta=beta if beta_scale is None else beta * beta_scale, **loss_options,
    )
    inside = (-0.5 * beta * ((e_w - e_l) - (r_w - r_l))).detach()
    metrics.update(error_metrics(e, e_ref), implicit_acc=(inside > 0).float().mean())
    return losses, metrics


def error_metrics(e: torch.Tensor, e_ref: torch.Tensor | None, group_size: int = 2) -> Metrics:
    """``model_mse``, ``e_w``, ``e_l`` (first / last member) and, with a reference, ``ref_mse``, ``e_ref_w``,
    ``e_ref_l``."""
    e = e.detach()
    out: Metrics = {"model_mse": e.mean(), "e_w": e.chunk(group_size)[0].mean(), "e_l": e.chunk(group_size)[-1].mean()}
    if e_ref is not None:
        e_ref = e_ref.detach()
        out.update({"ref_mse": e_ref.mean(), "e_ref_w": e_ref.chunk(group_size)[0].mean(),
                    "e_ref_l": e_ref.chunk(group_size)[-1].mean()})
    return out


def _empty_step(policy) -> tuple[torch.Tensor, Metrics]:
    """A batch whose items were all unreadable: a zero loss that still touches the graph (DDP-safe)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    return sum(p.sum() * 0.0 for p in params[:1]), {}


def make_step_fn(ctx: StepContext, skip_counter: Any | None = None
                 ) -> Callable[[Any, dict[str, Any]], tuple[torch.Tensor, Metrics]]:
    """The ``step_fn(model, batch)`` for :func:`mmalign.train.train`: the registered step of ``ctx.method.name``;
    ``skip_counter`` (a :class:`mmalign.data.SkipCounter`) counts the readers' skipped items carried in
    ``batch["skipped"]``."""
    method = method_spec(ctx.method.name).hook("step")

    def step_fn(policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
        if skip_counter is not None and "skipped" in batch:
            skip_counter.update(batch)
        if not batch.get("groups"):
            return _empty_step(policy)
        return method(ctx, policy, batch)

    return step_fn
