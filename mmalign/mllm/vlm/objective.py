"""One VLM preference step: policy / reference scores → :func:`mmalign.objectives.preference_loss` terms.

No loss is written here; every term is the core objective applied to a different pair of scores
(spec/vlm_video_objectives.md §1, §4–§6). With ``rho(y|v) = S_theta(y|v) - S_ref(y|v)``:

* **DPO family** (``method.name=dpo``): ``preference_loss(loss, chosen=S(y_w|v), rejected=S(y_l|v), ...)`` —
  any kind (sigmoid, cdpo, robust, hinge, ipo, bco_pair, simpo, orpo; RPO = sigmoid + ``sft_weight``).
  Scores are summed completion log-probs; completion lengths are passed, so IPO normalises by length and
  SimPO / ORPO use mean log-probs, as TRL does.
* **mDPO** (Wang et al. 2024, luka-group/mDPO ``mdpo_trainer.py``; code = paper):
  ``L = L_DPO + L_CoPO + L_AncPO`` with ``L_CoPO = -logsig(beta [rho(y_w|m) - rho(y_w|m')])`` (sigmoid core on
  the pair chosen-under-image vs chosen-under-corrupted-image) and ``L_AncPO = -logsig(beta rho(y_w|m) - delta)``
  (sigmoid core with a constant rejected score ``delta / beta``), delta = ``method.mdpo.anchor_delta`` (0 in the
  code); the corrupted image is a random crop of ``method.mdpo.crop_scale_min..max`` of the area. One shared beta.
* **rDPO** (Re-Align, Xing et al. 2025): ``L = L_DPO + L_vDPO``, ``L_vDPO = -logsig(beta [rho(y_w|v) -
  rho(y_w|v_retrieved)])`` (paper figure). Code difference: the official ``rDPOTrainer`` scores the rejected and
  the retrieved-image terms with top-1-non-label log-probs; ``method.rdpo.noisy=true`` reproduces that.
* **MM-DPO per-sample beta** (MM-RLHF): ``beta`` becomes a detached ``[B]`` tensor from
  :mod:`mmalign.objectives.dynamic_beta`; with ``sft_weight=0.25`` this is the MM-DPO objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mmalign.mllm.forward import (
    completion_window,
    encode_images,
    forward_logits,
    noisy_sequence_logps,
    reference_mode,
)
from mmalign.mllm.logprobs import sequence_logps
from mmalign.mllm.vlm.config import VLMMethodConfig
from mmalign.objectives import REFERENCE_FREE_KINDS, preference_loss
from mmalign.objectives.dynamic_beta import per_sample_beta


@dataclass(frozen=True)
class VLMMethod:
    """What the recipe and collator need to know of a VLM method (read from :data:`METHODS`, not branched on)."""

    extra_image: str
    """The second image the chosen answer is also scored under: ``none``; ``row`` (every row names one in
    ``data.extra_image_field``, required); ``row_or_crop`` (the row's when the field is set, else a random crop)."""
    anchor: bool = False
    """Adds mDPO's anchor term ``-logsig(beta rho_w - delta)`` (delta: ``method.mdpo.anchor_delta``)."""
    noisy_scoring: bool = False
    """Reads ``method.rdpo.noisy`` (rDPO's official top-1-non-label scoring of the rejected / extra rows)."""

    @property
    def requires_extra_image(self) -> bool:
        return self.extra_image == "row"

    @property
    def scores_extra_image(self) -> bool:
        return self.extra_image != "none"

    def collator_extra(self, extra_image_field: str | None) -> str:
        """The :class:`~mmalign.mllm.vlm.batch.VisionPreferenceCollator` ``extra`` mode for this data set."""
        if self.extra_image == "row_or_crop":
            return "row_or_crop" if extra_image_field else "crop"
        return self.extra_image


METHODS: dict[str, VLMMethod] = {
    "dpo": VLMMethod(extra_image="none"),
    "mdpo": VLMMethod(extra_image="row_or_crop", anchor=True),  # L_CoPO on a corrupted (cropped) image, L_AncPO
    "rdpo": VLMMethod(extra_image="row", noisy_scoring=True),  # L_vDPO on the row's retrieved image
}
"""The VLM methods; a new one is an entry here (and its key spec, with its options section, in
:mod:`mmalign.mllm.vlm.methods`), its terms in :func:`preference_step`, a YAML and a test."""


def vlm_method(name: str) -> VLMMethod:
    from mmalign.config import ConfigError

    if name not in METHODS:
        raise ConfigError(f"method.name={name!r} is not one of {', '.join(METHODS)}")
    return METHODS[name]


def check_method(method: VLMMethodConfig) -> None:
    """Reject unknown names before any model is loaded (:class:`~mmalign.config.ConfigError` naming the key)."""
    from mmalign.config import ConfigError
    from mmalign.objectives import PREFERENCE_KINDS
    from mmalign.objectives.dynamic_beta import BETA_MODES

    vlm_method(method.name)
    for key, value, allowed in (("method.loss_type", method.loss_type, PREFERENCE_KINDS),
                                ("method.beta_mode", method.beta_mode, BETA_MODES)):
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    if method.beta_mode != "fixed" and method.loss_type not in ("sigmoid", "cdpo", "robust", "hinge", "bco_pair"):
        raise ConfigError(f"method.beta_mode={method.beta_mode!r} needs a beta-scaled reference loss, not {method.loss_type!r}")


def needs_reference(method: VLMMethodConfig) -> bool:
    """Reference-free objectives (SimPO, ORPO) load no reference unless an mDPO/rDPO term needs one."""
    return method.loss_type not in REFERENCE_FREE_KINDS or METHODS[method.name].scores_extra_image


def _scores(model, text, vision, features, *, times, noisy_from: int | None = None):
    """Summed scores and token counts; rows from ``noisy_from`` on use the noisy (rDPO-code) scorer."""
    start = completion_window(text)  # logits of prompt positions are never materialised
    logits = forward_logits(model, text, vision, times=times, features=features, keep_from=start)
    labels, mask = text["input_ids"][:, start:], text["completion_mask"][:, start:]
    scores, n_tokens = sequence_logps(logits, labels, mask, "sum")
    if noisy_from is not None:
        noisy = noisy_sequence_logps(logits, labels, mask)
        scores = torch.cat([scores[:noisy_from], noisy[noisy_from:]])
    return scores, n_tokens


def _all_scores(model, batch, method, features, extra_features) -> dict[str, torch.Tensor]:
    noisy = METHODS[method.name].noisy_scoring and method.rdpo.noisy
    n_pairs = len(batch["row_ids"])
    scores, n_tokens = _scores(model, batch["pair"], batch["vision"], features, times=2,
                               noisy_from=n_pairs if noisy else None)
    out = {"chosen": scores[:n_pairs], "rejected": scores[n_pairs:],
           "chosen_len": n_tokens[:n_pairs], "rejected_len": n_tokens[n_pairs:]}
    if METHODS[method.name].scores_extra_image:
        extra, _ = _scores(model, batch["extra"], batch["extra_vision"], extra_features, times=1,
                           noisy_from=0 if noisy else None)
        out["chosen_extra"] = extra
    return out


def preference_step(
    model: torch.nn.Module,
    batch: dict[str, Any],
    method: VLMMethodConfig,
    *,
    ref_model: torch.nn.Module | None = None,
    share_features: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Loss (mean over pairs) and metrics of one collated batch (:class:`~mmalign.mllm.vlm.batch.VisionPreferenceCollator`).

    ``share_features``: encode each image once and reuse the features everywhere (valid only when the vision
    tower and projector are frozen and un-adapted; the recipe decides). ``ref_model=None`` with a peft
    ``model`` uses the adapters-disabled model as reference.
    """
    if method.name not in METHODS:
        raise ValueError(f"method.name must be one of {tuple(METHODS)}, got {method.name!r}")
    if not batch["row_ids"]:  # every row had an unreadable image: nothing to learn, keep the graph valid
        zero = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return zero, {"data/bad_images": float(batch.get("n_bad", 0)), "data/overlong_dropped": 0.0}
    has_extra = METHODS[method.name].scores_extra_image
    features = encode_images(model, batch["vision"]) if share_features else None
    extra_features = encode_images(model, batch["extra_vision"]) if share_features and has_extra else None

    policy = _all_scores(model, batch, method, features, extra_features)
    ref: dict[str, torch.Tensor] = {}
    if needs_reference(method):
        with reference_mode(model, ref_model) as scorer:
            ref = _all_scores(scorer, batch, method, features, extra_features)
    n_pairs = policy["chosen"].shape[0]
    margins = None
    if method.beta_mode == "batch_implicit" and ref:
        margins = (policy["chosen"] - ref["chosen"]) - (policy["rejected"] - ref["rejected"])
    beta = per_sample_beta(method.beta_mode, method.beta, batch.get("rewards", {}), n_pairs,
                           weight=method.beta_weight, k=method.beta_k, device=policy["chosen"].device,
                           margins=margins)
    losses, metrics = preference_loss(
        method.loss_type, chosen=policy["chosen"], rejected=policy["rejected"],
        ref_chosen=ref.get("chosen"), ref_rejected=ref.get("rejected"), beta=beta,
        chosen_len=policy["chosen_len"], rejected_len=policy["rejected_len"],
        label_smoothing=method.label_smoothing, gamma=method.gamma,
        chosen_nll=-policy["chosen"], sft_weight=method.sft_weight,
    )
    metrics = dict(metrics)
    if has_extra:
        conditional, _ = preference_loss(
            "sigmoid", chosen=policy["chosen"], rejected=policy["chosen_extra"],
            ref_chosen=ref["chosen"], ref_rejected=ref["chosen_extra"], beta=beta,
        )
        metrics[f"{method.name}/conditional_loss"] = conditional.detach().mean()
        losses = losses + conditional
        if METHODS[method.name].anchor:
            offset = torch.full_like(policy["chosen"], method.mdpo.anchor_delta) / torch.as_tensor(beta)
            anchor, _ = preference_loss(
                "sigmoid", chosen=policy["chosen"], rejected=offset.detach(),
                ref_chosen=ref["chosen"], ref_rejected=torch.zeros_like(offset), beta=beta,
            )
            metrics["mdpo/anchor_loss"] = anchor.detach().mean()
            losses = losses + anchor
    metrics["logps/chosen"] = policy["chosen"].detach().mean()
    metrics["logps/rejected"] = policy["rejected"].detach().mean()
    if torch.is_tensor(beta):
        metrics["beta/mean"] = beta.mean()
    metrics["data/bad_images"] = float(batch.get("n_bad", 0))
    metrics["data/overlong_dropped"] = float(batch.get("n_overlong", 0))
    return losses.mean(), metrics
