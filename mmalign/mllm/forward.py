"""VLM forwards that score completions, with vision features computed once and reused.

A preference step scores the same image several times: chosen and rejected rows (TRL repeats the pixels,
so the vision encoder runs on every image twice), and again for the reference model. When the vision tower
and projector are frozen and carry no adapter, their output is the same for all of these, so
:func:`encode_images` runs them once (under ``no_grad``) and :func:`score_rows` passes the features through
transformers 5's ``mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=...)}`` forward
argument (Qwen2-VL / Qwen2.5-VL / LLaVA / Idefics3 / SmolVLM ... all accept it); grids such as
``image_grid_thw`` are still passed, since M-RoPE positions need them.

Scores are summed (or mean) completion log-probs from :func:`mmalign.mllm.logprobs.sequence_logps`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mmalign.mllm.logprobs import sequence_logps, token_logps
from mmalign.reference import reference_model
from mmalign.unwrap import unwrap

PIXEL_KEYS = ("pixel_values", "pixel_attention_mask")
"""Vision inputs consumed only by the vision encoder (replaced by cached features when shared)."""


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers ``*ForConditionalGeneration`` under DDP / accelerate / compile / peft wrappers."""
    model = unwrap(model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def vision_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The vision encoder + projector: every top-level child of the inner model that is not the language model."""
    inner = base_model(model)
    core = getattr(inner, "model", inner)
    decoder = core.get_decoder() if hasattr(core, "get_decoder") else None
    mods = [m for _, m in core.named_children() if m is not decoder and not isinstance(m, torch.nn.Embedding)]
    if decoder is None or not mods:
        raise ValueError(f"cannot locate the vision tower of {type(inner).__name__}")
    return mods


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The vision encoder module (first of :func:`vision_modules`), e.g. for counting its calls with a hook."""
    return vision_modules(model)[0]


def repeat_rows(value: Any, times: int) -> Any:
    """Repeat a per-image tensor / list ``times`` along the first dimension (rows are ``[chosen ; rejected]``)."""
    if times == 1:
        return value
    if torch.is_tensor(value):
        return torch.cat([value] * times, 0)
    if isinstance(value, list | tuple):
        return list(value) * times
    return value


@torch.no_grad()
def encode_images(model: torch.nn.Module, vision: dict[str, Any]) -> Any:
    """Vision features (``pooler_output``: one tensor per image, or a stacked tensor) of the batch's images."""
    inner = base_model(model)
    fn = inner.get_image_features
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in vision.items() if k in params}
    out = fn(**kwargs, return_dict=True)
    return out.pooler_output


SCORING_KEYS = ("completion_mask", "phrase_ids", "group_size")
"""Batch keys used only for scoring; never passed to the model's forward."""


def forward_logits(
    model: torch.nn.Module, text: dict[str, torch.Tensor], vision: dict[str, Any] | None = None, *, times: int = 1,
    features: Any = None, keep_from: int = 0,
) -> torch.Tensor:
    """Logits ``[N, T - keep_from, V]`` of the ``N = times * B`` rows of ``text`` (positions ``keep_from..T-1``): the
    one forward of the VLM and video recipes (a video batch is ``text`` alone, its pixels included, ``times=1``).

    ``vision`` holds the ``B`` images' tensors; they are repeated ``times``, or, when ``features`` (from
    :func:`encode_images`) is given, the pixel inputs are replaced by the repeated features (grids are kept).
    ``keep_from > 0`` asks the model for the last ``T - keep_from`` logits only (``logits_to_keep``), so the
    ``B x T x V`` logits of long visual prompts are never materialised.
    """
    kwargs: dict[str, Any] = {k: v for k, v in text.items() if k not in SCORING_KEYS}
    for key, value in (vision or {}).items():
        if features is not None and key in PIXEL_KEYS:
            continue
        kwargs[key] = repeat_rows(value, times)
    if features is not None:
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=repeat_rows(features, times))}
    if keep_from > 0:
        kwargs["logits_to_keep"] = text["input_ids"].shape[1] - keep_from
    logits = model(**kwargs, use_cache=False).logits
    expected = text["input_ids"].shape[1] - keep_from
    if logits.shape[1] != expected:  # a model that ignores logits_to_keep
        logits = logits[:, -expected:]
    return logits


def completion_window(text: dict[str, torch.Tensor]) -> int:
    """First position whose logits are needed: one before the earliest completion token of any row."""
    mask = text["completion_mask"].bool()
    if not mask.any():
        return 0
    first = int(mask.float().argmax(1)[mask.any(1)].min())
    return max(first - 1, 0)


def score_rows(
    model: torch.nn.Module, text: dict[str, torch.Tensor], vision: dict[str, Any], *, times: int,
    features: Any = None, reduction: str = "sum",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [N], n_tokens [N])``: completion log-probs (``completion_mask``) of the rows of ``text``.

    Only the logits from :func:`completion_window` on are computed; log-probs are identical to scoring the
    full logits (the skipped positions predict prompt tokens, which the mask excludes)."""
    start = completion_window(text)
    logits = forward_logits(model, text, vision, times=times, features=features, keep_from=start)
    return sequence_logps(logits, text["input_ids"][:, start:], text["completion_mask"][:, start:], reduction)


def noisy_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed :func:`noisy_token_logps` per row."""
    per_token, _ = noisy_token_logps(logits, labels, mask)
    return per_token.sum(1)


def noisy_token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
    """Re-Align's ``_get_noisy_batch_logps`` (taco-group/Re-Align ``dpo_trainer.py``): at every completion
    position the log-prob of the model's top-1 token, or of its top-2 token when top-1 is the label — i.e. *not*
    the label's log-prob. Only for reproducing the official rDPO code (``method.rdpo.noisy=true``)."""
    shift = logits[:, :-1]
    top2 = shift.detach().topk(2, dim=-1).indices
    label = labels[:, 1:]
    pick = torch.where(top2[..., 0] == label, top2[..., 1], top2[..., 0])
    return token_logps(logits, torch.cat([labels[:, :1], pick], 1), mask)


@contextlib.contextmanager
def reference_mode(model: torch.nn.Module, ref_model: torch.nn.Module | None) -> Iterator[torch.nn.Module]:
    """Yield the module that computes reference scores, under ``no_grad``.

    ``ref_model`` given: that frozen copy. Otherwise ``model`` must be a peft model: its adapters are disabled and it
    is in eval mode for the duration (:func:`mmalign.reference.reference_model`, restored even on error).
    """
    with torch.no_grad(), reference_model(model, ref_model) as ref:
        yield ref
