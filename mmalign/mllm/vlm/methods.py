"""The VLM methods' key specs (:mod:`mmalign.method_registry` shape): which ``method.*`` keys each method reads.

A key the user sets that ``method.name`` does not read is a ConfigError naming the key and the method
(:func:`check_method_keys`); main accepted mDPO's / rDPO's keys on any method. Light: no torch, read by the
schema. The steps are :data:`mmalign.mllm.vlm.objective.METHODS` (a test keeps the names equal).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmalign.method_registry import MethodSpecBase, check_given_keys

_DPO = ("loss_type", "beta", "label_smoothing", "gamma", "sft_weight", "beta_mode", "beta_weight", "beta_k",
        "share_vision_features")


@dataclass(frozen=True)
class VLMMethodSpec(MethodSpecBase):
    name: str
    uses: tuple[str, ...]
    summary: str = ""
    options: type | None = None
    ignores: tuple[str, ...] = ()


SPECS: dict[str, VLMMethodSpec] = {s.name: s for s in (
    VLMMethodSpec("dpo", _DPO, "DPO family (any loss_type; RPO = sft_weight > 0; MM-DPO beta modes)"),
    VLMMethodSpec("mdpo", (*_DPO, "anchor_delta", "crop_scale_min", "crop_scale_max"),
                  "mDPO: DPO + conditional (cropped image) + anchor terms"),
    VLMMethodSpec("rdpo", (*_DPO, "rdpo_noisy"), "rDPO: DPO + retrieved-image term"),
)}


def check_method_keys(name: str, given: set[str], shared: tuple[str, ...]) -> None:
    """``shared``: the schema's ``method.*`` keys; a key ``name`` does not read is a ConfigError."""
    if name not in SPECS:
        return  # the unknown name is reported by mmalign.mllm.vlm.objective.check_method
    check_given_keys(SPECS, name, given, shared)
