"""The VLM methods' key specs (:mod:`mmalign.method_registry` shape) and the ``method:`` block they read.

The DPO-family keys every VLM method reads are shared (:data:`SHARED_KEYS`: ``method.loss_type``, ``method.beta``
— the preference temperature —, ``method.label_smoothing``, ``method.gamma``, ``method.sft_weight``, the MM-DPO
``method.beta_mode`` / ``beta_weight`` / ``beta_k``, ``method.share_vision_features``). What only one method
reads is its own section, the ``options`` dataclass of its spec: ``method.mdpo.*`` (:class:`MdpoOptions`: the
anchor delta and the crop of the corrupted image), ``method.rdpo.*`` (:class:`RdpoOptions`: the official
scorer). A key the user sets that ``method.name`` does not read — another method's section included — is a
ConfigError naming the key and the method (:func:`check_method_keys`); the old flat spellings
(``method.anchor_delta``, ``method.crop_scale_min`` / ``_max``, ``method.rdpo_noisy``) are renamed to the section
with a deprecation note (:data:`LEGACY_KEYS`, :func:`mmalign.method_registry.renamed_option_key`).

Light: no torch, read by the schema. The steps are :data:`mmalign.mllm.vlm.objective.METHODS` (a test keeps the
names equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.method_registry import MethodSpecBase, check_given_keys, chosen_view, renamed_option_key
from mmalign.validate import Range, register, register_check

SHARED_KEYS = ("loss_type", "beta", "label_smoothing", "gamma", "sft_weight", "beta_mode", "beta_weight", "beta_k",
               "share_vision_features")
"""The ``method.*`` keys of the DPO family, read by every VLM method."""


@dataclass
class MdpoOptions:
    """mDPO (``method.mdpo.*``; Wang et al. 2024, ``luka-group/mDPO`` ``mdpo_trainer.py``)."""

    anchor_delta: float = 0.0
    """delta of the anchor term ``-logsig(beta rho_w - delta)`` (0 in the official code)."""
    crop_scale_min: float = 0.01
    """The corrupted image: smallest kept fraction of the image area of the random crop (official 0.01)."""
    crop_scale_max: float = 0.2
    """The corrupted image: largest kept fraction of the image area of the random crop (official 0.2)."""


@dataclass
class RdpoOptions:
    """rDPO (``method.rdpo.*``; Re-Align, Xing et al. 2025)."""

    noisy: bool = False
    """Score the rejected and retrieved-image terms with the official ``rDPOTrainer``'s top-1-non-label log-probs
    (reproduction only; the paper uses label log-probs)."""


@dataclass
class VLMMethodConfig:
    """The ``method:`` block: the method, the shared DPO-family keys, and one section per method's own options (only
    ``method.<name>`` of the chosen method may be set)."""

    name: str = "dpo"
    """dpo (any ``loss_type``) | mdpo (DPO + conditional + anchor terms) | rdpo (DPO + retrieved-image term)."""
    loss_type: str = "sigmoid"
    """A kind of :func:`mmalign.objectives.preference_loss`: sigmoid, cdpo, robust, hinge, ipo, bco_pair, simpo,
    orpo. RPO = sigmoid with ``sft_weight`` > 0."""
    beta: float = 0.1
    """Inverse temperature (IPO's tau, ORPO's lambda); mDPO's and rDPO's extra terms use the same one."""
    label_smoothing: float = 0.0
    """eps of cdpo / robust / simpo."""
    gamma: float = 0.0
    """SimPO target margin."""
    sft_weight: float = 0.0
    """Weight of the chosen NLL term (token mean over the batch, TRL ``sft``); RPO alpha, MM-DPO gamma (0.25)."""
    beta_mode: str = "fixed"
    """fixed | per_sample (MM-RLHF paper: reward margins) | ls_factor (MM-RLHF code's per-row factor) |
    batch_implicit (what the released MM-RLHF code computes: one beta per batch from the log-ratio margins)."""
    beta_weight: float = 0.1
    """MM-RLHF w."""
    beta_k: float = 1.0
    """MM-RLHF k in ``1 - exp(-k delta)``."""
    share_vision_features: bool = True
    """Encode each image once per step and reuse the features for chosen, rejected, extra and reference rows
    (only when the vision tower and projector are frozen and carry no adapter)."""
    mdpo: MdpoOptions = field(default_factory=MdpoOptions)
    """mDPO's anchor delta and crop (``method.mdpo.*``)."""
    rdpo: RdpoOptions = field(default_factory=RdpoOptions)
    """rDPO's scorer (``method.rdpo.*``)."""


@dataclass(frozen=True)
class VLMMethodSpec(MethodSpecBase):
    name: str
    uses: tuple[str, ...]
    summary: str = ""
    options: type | None = None
    ignores: tuple[str, ...] = ()


SPECS: dict[str, VLMMethodSpec] = {s.name: s for s in (
    VLMMethodSpec("dpo", SHARED_KEYS, "DPO family (any loss_type; RPO = sft_weight > 0; MM-DPO beta modes)"),
    VLMMethodSpec("mdpo", SHARED_KEYS, "mDPO: DPO + conditional (cropped image) + anchor terms", MdpoOptions),
    VLMMethodSpec("rdpo", SHARED_KEYS, "rDPO: DPO + retrieved-image term", RdpoOptions),
)}

LEGACY_KEYS = {"method.anchor_delta": "anchor_delta", "method.crop_scale_min": "crop_scale_min",
               "method.crop_scale_max": "crop_scale_max", "method.rdpo_noisy": "noisy"}
"""Flat keys of the one-block VLM schema and their option name in the method's own section."""


def check_method_keys(name: str, given: set[str]) -> None:
    """A key the user set (dotted, YAML and overrides) that method ``name`` does not read is a ConfigError."""
    if name not in SPECS:
        return  # the unknown name is reported by mmalign.mllm.vlm.objective.check_method
    check_given_keys(SPECS, name, given, SHARED_KEYS)


def renamed_method_key(key: str, raw: dict) -> str | None:
    """``method.anchor_delta`` → ``method.mdpo.anchor_delta``, ``method.rdpo_noisy`` → ``method.rdpo.noisy``, ...
    (a ConfigError when ``method.name`` has no such option)."""
    return renamed_option_key(SPECS, LEGACY_KEYS, key, [str((raw.get("method") or {}).get("name", "dpo"))])


def chosen_sections(config: dict) -> dict:
    """A plain VLM config mapping with only the chosen method's section: what the saved run config holds."""
    return chosen_view(SPECS, config, SHARED_KEYS)


register(VLMMethodConfig, beta=Range(0, low_open=True), label_smoothing=Range(0, 0.5), gamma=Range(0),
         sft_weight=Range(0), beta_weight=Range(0), beta_k=Range(0, low_open=True))
register(MdpoOptions, crop_scale_min=Range(0, 1, low_open=True), crop_scale_max=Range(0, 1, low_open=True))
register_check(MdpoOptions, lambda o: None if o.crop_scale_min <= o.crop_scale_max else
               f"crop_scale_min ({o.crop_scale_min}) must be <= crop_scale_max ({o.crop_scale_max})")
