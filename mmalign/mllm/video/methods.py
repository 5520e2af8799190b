"""The video methods' key specs (:mod:`mmalign.method_registry` shape): which ``method.*`` keys each method reads.

A key the user sets that no method of the run reads (``method.name``, or every stage's ``method`` for a
curriculum) is a ConfigError naming the key and the method (:func:`check_method_keys`), where main accepted it
silently (``method.alpha`` on dpo, ``method.magnitude`` on rrpo, ...). Light: no torch, read by the schema.
The step builders are :data:`mmalign.mllm.video.build.STEPS` (a test keeps the names equal).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mmalign.config_error import ConfigError
from mmalign.method_registry import MethodSpecBase, check_given_keys

_PAIR = ("beta", "loss_type", "sft_weight", "label_smoothing", "gamma")
_PERTURB = ("perturbations", "magnitude", "frames_per_clip")


@dataclass(frozen=True)
class VideoMethodSpec(MethodSpecBase):
    name: str
    uses: tuple[str, ...]
    summary: str = ""
    options: type | None = None
    ignores: tuple[str, ...] = ()


SPECS: dict[str, VideoMethodSpec] = {s.name: s for s in (
    VideoMethodSpec("sft", (), "token-mean NLL of the responses"),
    VideoMethodSpec("dpo", _PAIR, "DPO family on chosen / rejected answers to the same video (TEMPLE stages)"),
    VideoMethodSpec("vdpo", _PAIR + _PERTURB, "DPO family, rejected = the answer on a temporally perturbed video"),
    VideoMethodSpec("rrpo", ("beta", "alpha", "kl_chunk_size"), "RRPO: phrase-level ratios + token KL"),
)}


def shared_keys() -> tuple[str, ...]:
    """Every ``method.*`` key of the video schema but ``name``."""
    from mmalign.mllm.video.config import MethodConfig

    return tuple(f.name for f in fields(MethodConfig) if f.name != "name")


def check_method_keys(methods: list[str], given: set[str]) -> None:
    """``methods``: the methods of the run (``method.name``, or each stage's); a ``method.*`` key the user set that
    none of them reads is a ConfigError naming the key and the method."""
    shared = shared_keys()
    for key in sorted(k for k in given if k.startswith("method.") and k != "method.name"):
        errors = []
        for name in dict.fromkeys(methods):
            try:
                check_given_keys(SPECS, name, {key}, shared)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == len(set(methods)):
            raise errors[0]
