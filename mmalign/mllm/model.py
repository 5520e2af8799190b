"""Load a VLM + processor, freeze the vision side, add LoRA (peft) or prepare full fine-tuning + reference copy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmalign.lora_config import ALL_LINEAR, LoraConfig
from mmalign.mllm.forward import base_model, vision_modules
from mmalign.mllm.model_config import VLMModelConfig
from mmalign.reference import frozen_copy

_DTYPES: dict[str, Any] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                           "auto": "auto"}


def load_vlm(cfg: VLMModelConfig, *, device: torch.device | str | None = None,
             train_safe: bool = True) -> tuple[torch.nn.Module, Any]:
    """The one VLM / video LLM loader: ``(model, processor)`` from a hub id or local folder
    (``AutoModelForImageTextToText`` / ``AutoProcessor``; a ``tiny:<family>`` placeholder is saved as such a
    folder by the recipe first, :mod:`mmalign.testing.placeholders`). ``train_safe``: a pad token and dropout off
    (:func:`make_train_safe`, for training); otherwise the model is put in ``eval()`` (inference: PPD user
    embeddings, TEMPLE pair generation). ``device``: where the model goes (None: where it was loaded)."""
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {cfg.dtype!r}")
    if cfg.pretrained.startswith("tiny:"):
        raise ValueError(f"model.pretrained={cfg.pretrained}: a tiny: placeholder is saved as a folder first "
                         "(mmalign.testing.placeholders: the diffusion and video recipes and `mmalign temple` do that)")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs: dict[str, Any] = {"dtype": _DTYPES[cfg.dtype], "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(cfg.pretrained, **kwargs)
    processor = AutoProcessor.from_pretrained(cfg.processor or cfg.pretrained, trust_remote_code=cfg.trust_remote_code)
    if device is not None:
        model.to(device)
    if train_safe:
        make_train_safe(model, processor)
    else:
        model.eval()
    return model, processor


def make_train_safe(model: torch.nn.Module, processor: Any) -> None:
    """What every loaded VLM gets: a pad token (the eos token when the tokenizer has none) and dropout off."""
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    disable_dropout(model)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every ``nn.Dropout`` to p=0 (TRL ``disable_dropout=True``): policy and reference must be deterministic."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def vision_parameter_names(model: torch.nn.Module) -> set[str]:
    """Full names (in ``model``) of the vision tower + projector parameters."""
    ids = {id(p) for m in vision_modules(model) for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def freeze_vision(model: torch.nn.Module) -> int:
    """Freeze vision tower + projector; returns the number of frozen parameters."""
    n = 0
    for m in vision_modules(model):
        for p in m.parameters():
            p.requires_grad_(False)
            n += p.numel()
    return n


def lora_target_modules(model: torch.nn.Module, targets: Sequence[str], *, include_vision: bool) -> list[str]:
    """The one LoRA target selector of the VLM and video recipes: module names for peft. ``[all-linear]`` = every
    ``nn.Linear`` outside lm_head (and outside the vision tower + projector unless ``include_vision``); otherwise
    the linear layers whose name is or ends with one of the suffixes, filtered the same way."""
    inner = base_model(model)
    vision_ids = {id(m) for v in vision_modules(inner) for m in v.modules()}
    head = inner.get_output_embeddings()
    suffixes = None if list(targets) == [ALL_LINEAR] else [s.strip() for s in targets if s.strip()]
    names = []
    for name, module in inner.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if id(module) in vision_ids and not include_vision:
            continue
        if suffixes is None or any(name == s or name.endswith("." + s) for s in suffixes):
            names.append(name)
    if not names:
        raise ValueError(f"lora.target_modules={list(targets)!r} matches no linear layer of {type(inner).__name__}")
    return sorted(names)


def add_lora(model: torch.nn.Module, cfg: LoraConfig, *, include_vision: bool = False,
             seed: int | None = None) -> torch.nn.Module:
    """Wrap ``model`` in a peft LoRA model (only adapter weights trainable). ``seed``: the adapter's random init
    (LoRA A) from a forked RNG (None: the global torch RNG, whose state after ``from_pretrained`` can differ
    between processes)."""
    from peft import get_peft_model

    targets = lora_target_modules(model, cfg.target_modules, include_vision=include_vision)
    config = peft_config(cfg, targets)
    if seed is None:
        return get_peft_model(model, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def peft_config(cfg: LoraConfig, targets: list[str]) -> Any:
    """peft ``LoraConfig`` of the ``lora:`` block for the module names ``targets``."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.scale_alpha, lora_dropout=cfg.dropout, target_modules=targets,
                          init_lora_weights=cfg.peft_init(), bias="none")


def prepare_policy(
    model: torch.nn.Module, model_cfg: VLMModelConfig, lora: LoraConfig, *, needs_reference: bool
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """``(policy, ref_model)``: LoRA → ``ref_model=None`` (adapters off is the reference); full fine-tuning →
    a frozen ``eval()`` deep copy taken before training (``None`` for reference-free objectives)."""
    if model_cfg.freeze_vision:
        freeze_vision(model)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora.enabled:
        policy = add_lora(model, lora, include_vision=not model_cfg.freeze_vision)
        if model_cfg.gradient_checkpointing:
            policy.enable_input_require_grads()
        return policy, None
    ref = None
    if needs_reference:
        ref = frozen_copy(model)
    return model, ref
