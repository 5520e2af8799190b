"""Builders the diffusion recipe calls in order: check the config, load data, make the training set, set up the UNet.

Each function does one step of ``recipes/diffusion.py`` so the recipe reads top to bottom.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from mmalign.config import ConfigError, require_paths
from mmalign.diffusion.adapter import FLOW_FAMILIES, DiffusionParts, apply_model_options
from mmalign.diffusion.batches import CachedDataset, PixelDataset, build_cache, collate_members
from mmalign.diffusion.cache import LatentTextCache
from mmalign.diffusion.caption_length import report_overlong
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.diffusion.flips import FLIP_MODES
from mmalign.diffusion.kto_sampling import positive_ratio_weights, training_labels
from mmalign.diffusion.lora import add_lora
from mmalign.diffusion.reference import ReferenceProvider
from mmalign.diffusion.registry import REGISTRY, method_spec
from mmalign.diffusion.soft_labels import REWARD_RANGES
from mmalign.diffusion.speed import apply_speed_options

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def normalize_config(cfg: DiffusionRecipeConfig) -> None:
    """What must hold before the Accelerator is made: a valid ``train.mixed_precision``; input paths absolute
    (relative ones found in the cwd, else in the repository: :func:`mmalign.shipped_paths.resolve_shipped`), so
    the saved run config works from any directory."""
    from mmalign.shipped_paths import resolve_shipped

    cfg.model.pretrained = resolve_shipped(cfg.model.pretrained)
    cfg.data.path = resolve_shipped(cfg.data.path)
    for section in (cfg.method.smpo, cfg.method.ppd, cfg.validation):
        section.scorer_checkpoint = resolve_shipped(section.scorer_checkpoint)
    cfg.method.ppd.vlm = resolve_shipped(cfg.method.ppd.vlm)
    if str(cfg.train.mixed_precision).lower() == "false":  # YAML 1.1 / OmegaConf read a bare `no` as a boolean
        cfg.train.mixed_precision = "no"
    if cfg.train.mixed_precision not in WEIGHT_DTYPES:
        raise ConfigError(f"config key 'train.mixed_precision': '{cfg.train.mixed_precision}' (no, fp16, bf16)")


def frozen_dtype(cfg: DiffusionRecipeConfig) -> torch.dtype:
    """dtype of the frozen weights (UNet under LoRA, text encoders, reference): ``model.dtype``, or the compute
    dtype of ``train.mixed_precision`` when it is null."""
    if cfg.model.dtype is not None:
        return getattr(torch, cfg.model.dtype)
    return WEIGHT_DTYPES[cfg.train.mixed_precision]


def check_config(cfg: DiffusionRecipeConfig) -> str:
    """Validate names and paths before anything heavy is loaded; returns the data kind."""
    normalize_config(cfg)
    spec = method_spec(cfg.method.name)
    kind = cfg.data.kind or spec.data
    if kind != spec.data:
        raise ConfigError(f"config key 'data.kind': method '{spec.name}' needs '{spec.data}' data")
    if cfg.data.flip_mode not in FLIP_MODES:
        raise ConfigError(f"config key 'data.flip_mode': '{cfg.data.flip_mode}' ({', '.join(FLIP_MODES)})")
    if cfg.method.smpo.reward_range != "data" and cfg.method.smpo.reward_range not in REWARD_RANGES:
        raise ConfigError(f"config key 'method.smpo.reward_range': '{cfg.method.smpo.reward_range}' "
                          f"(data, {', '.join(REWARD_RANGES)})")
    if cfg.lora.rank < 0:
        raise ConfigError("config key 'lora.rank' must be >= 0 (0 = full fine-tuning)")
    if cfg.data.media_root is not None:
        raise ConfigError("config key 'data.media_root' is not read by the diffusion readers: image paths of "
                          "jsonl/csv rows resolve against the data file's folder")
    if cfg.export.ema and cfg.lora.rank > 0:
        raise ConfigError("config key 'export.ema' is for full fine-tuning (lora.rank=0)")
    require_paths(**{"model.pretrained": cfg.model.pretrained, "data.path": cfg.data.path})
    if cfg.reward.scorers:
        from mmalign.diffusion.online.setup import check_reward_checkpoints

        check_reward_checkpoints(cfg.reward)
    check_family_options(cfg, local_family(cfg.model.pretrained))
    return kind


def local_family(pretrained: str) -> str | None:
    """``sd3`` / ``flux`` when ``pretrained`` is a local folder whose model_index.json names a
    StableDiffusion3Pipeline / FluxPipeline, else None (other families, or a hub id: known after loading)."""
    import json
    from pathlib import Path

    index = Path(str(pretrained)) / "model_index.json"
    if not index.is_file():
        return None
    name = json.loads(index.read_text()).get("_class_name")
    return {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}.get(name)


def check_family_options(cfg: DiffusionRecipeConfig, family: str | None) -> None:
    """Options that do not apply to the flow families (sd3, flux) are ConfigErrors."""
    if family not in FLOW_FAMILIES:
        return
    try:
        check_flow_method(family, cfg.method.name)
    except ValueError as exc:
        raise ConfigError(f"config key 'method.name': {exc}") from None
    if cfg.method.timestep_weight != "none":
        raise ConfigError(f"config key 'method.timestep_weight': '{cfg.method.timestep_weight}' is for DDPM "
                          f"schedules; {family} models weight the loss by model.weighting_scheme")


def check_flow_method(family: str, method: str) -> None:
    """A ValueError for a method the flow families do not support (its registry entry's ``flow_matching``)."""
    if family in FLOW_FAMILIES and method in REGISTRY and not REGISTRY[method].flow_matching:
        supported = ", ".join(m.name for m in REGISTRY.values() if m.flow_matching)
        raise ValueError(f"method '{method}' is not supported for {family} (flow-matching) models: its noise "
                         f"provider / user branch is written for DDPM UNets; use {supported}")


def load_data(cfg: DiffusionRecipeConfig, kind: str):
    """Validated records with lazily decoded images (:func:`mmalign.data.load_preference_data`), with the row
    fields the method reads besides its kind's (the registry's ``columns``: PPD's ``user_id``); the train prompts
    for the online methods (kind ``prompts``: :func:`mmalign.data.prompts.load_prompts`)."""
    from mmalign.data import load_preference_data

    if kind == "prompts":
        from mmalign.data.prompts import load_prompts

        return load_prompts(cfg.data.path, "train", cfg.data.test_fraction, max_items=cfg.data.max_rows)
    return load_preference_data(
        cfg.data.path, kind=kind, max_bad_fraction=_fraction(cfg), max_items=cfg.data.max_rows,
        bad_image="drop" if cfg.data.cache else "replace", allow_outside_paths=cfg.data.allow_outside_paths,
        extra_columns=method_spec(cfg.method.name).columns,
    )


def skip_counter(cfg: DiffusionRecipeConfig, total: int):
    """The run's :class:`mmalign.data.SkipCounter`: ``data.on_bad_row`` and ``data.max_bad_fraction``."""
    from mmalign.data import SkipCounter

    return SkipCounter(total, cfg.data.max_bad_fraction, cfg.data.on_bad_row, what="samples")


def _fraction(cfg: DiffusionRecipeConfig) -> float:
    """The readers' load-time limit: 0 with ``on_bad_row=error`` (the first dropped row stops the run)."""
    return cfg.data.max_bad_fraction if cfg.data.on_bad_row == "skip" else 0.0


def training_set(cfg: DiffusionRecipeConfig, kind: str, dataset, parts: DiffusionParts, accelerator) -> tuple:
    """``(train_dataset, collate_fn, skip_counter, stats)``: the cached set (built/reused in a first pass on the
    main process) or the pixel set encoded in the step."""
    from mmalign.data import collate_skipping

    apply_model_options(parts, cfg.model)  # flow families: T5 length etc. before any prompt is encoded
    device = accelerator.device
    captions = report_overlong(dataset, parts.tokenizers[0], accelerator.print)  # truncated captions: counted
    if not cfg.data.cache:
        counter = skip_counter(cfg, len(dataset))
        return (PixelDataset(dataset, kind, cfg.data.resolution, cfg.data.random_flip, flip_mode=cfg.data.flip_mode),
                functools.partial(collate_skipping, collate_fn=collate_members), counter, {"cache": False, **captions})
    entries, stats = None, {}
    if accelerator.is_main_process:
        entries, stats, cache = prebuild_cache(cfg, kind, dataset, parts, device, progress=cfg.train.progress_bar)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        entries, stats, cache = prebuild_cache(cfg, kind, dataset, parts, device, progress=False)
    stats = {"cache": True, "cache_latents_dir": str(cache.latent_dir), "cache_text_dir": str(cache.text_dir), **stats,
             **captions}
    return (CachedDataset(entries, cache, cfg.data.random_flip, cfg.data.flip_mode), collate_members, None,
            stats)


def sampling_weights(cfg: DiffusionRecipeConfig, train_set) -> list[float] | None:
    """Per-example sampling weights for the loop's sampler: Diffusion-KTO's desirable ratio
    (``method.kto.positive_ratio``, :mod:`mmalign.diffusion.kto_sampling`), else None (a permutation per epoch)."""
    ratio = getattr(getattr(cfg.method, cfg.method.name, None), "positive_ratio", None)  # an option of kto's
    if ratio is None:
        return None
    return positive_ratio_weights(training_labels(train_set), ratio)


def prebuild_cache(cfg: DiffusionRecipeConfig, kind: str, dataset, parts: DiffusionParts, device,
                   progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any], LatentTextCache]:
    """Encode every image and prompt the cache lacks (also ``mmalign cache``); ``(entries, stats, cache)``."""
    apply_model_options(parts, cfg.model)
    for module in [parts.vae, *parts.text_encoders]:
        module.to(device)
    cache = LatentTextCache.for_model(parts, cfg.data.resolution, cfg.data.cache_dir, cfg.data.cache_dtype)
    entries, stats = build_cache(dataset, kind, parts, cache, cfg.data.resolution, device,
                                 counter=skip_counter(cfg, len(dataset)), progress=progress,
                                 num_workers=cfg.train.num_workers, flips=cfg.data.random_flip)
    return entries, stats, cache


def prepare_unet(cfg: DiffusionRecipeConfig, parts: DiffusionParts, accelerator,
                 data_stats: dict | None = None) -> tuple[Any, ReferenceProvider, dict]:
    """LoRA or full fine-tuning, the reference provider, dtypes and speed options. Returns
    ``(denoiser, reference, applied)``; the denoiser (``parts.denoiser``: the UNet, or the SD3 / FLUX transformer)
    is the pipeline's own (trained in place). (``data_stats``: what :func:`training_set` reported; a method's own
    ``setup_model`` hook may need it.)"""
    check_family_options(cfg, parts.family)
    apply_model_options(parts, cfg.model)
    weight_dtype = frozen_dtype(cfg)
    device = accelerator.device
    unet = parts.denoiser
    use_lora = cfg.lora.rank > 0
    needs_reference = method_spec(cfg.method.name).reference
    if use_lora:
        unet.to(device, weight_dtype)  # frozen base in the compute dtype
        add_lora(unet, cfg.lora)
        for p in unet.parameters():  # trainable LoRA weights in fp32 (diffusers cast_training_params)
            if p.requires_grad:
                p.data = p.data.float()
    else:
        unet.to(device).requires_grad_(True)
    # Full fine-tuning: the frozen copy keeps the policy's dtype (not weight_dtype), see ReferenceProvider.for_training
    reference = ReferenceProvider.for_training(unet, use_lora, needs_reference).to(device)
    place_frozen_parts(cfg, parts, device)
    applied = speed_options(cfg, unet, device)
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    applied.update(mode="lora" if use_lora else "full", reference=reference.mode, trainable_params=trainable,
                   weight_dtype=str(weight_dtype).replace("torch.", ""))
    return unet, reference, applied


def place_frozen_parts(cfg: DiffusionRecipeConfig, parts: DiffusionParts, device) -> torch.dtype:
    """The VAE (``model.vae_dtype``) and text encoders (:func:`frozen_dtype`) on ``device``; returns the frozen
    dtype. Every method's model setup calls it (the shared one and PPD's)."""
    weight_dtype = frozen_dtype(cfg)
    parts.vae.to(device, torch.float32 if cfg.model.vae_dtype == "float32" else weight_dtype)
    for encoder in parts.text_encoders:
        encoder.to(device, weight_dtype)
    return weight_dtype


def speed_options(cfg: DiffusionRecipeConfig, unet, device) -> dict[str, Any]:
    """``model.attn_implementation``, ``gradient_checkpointing``, ``channels_last``, ``compile`` on ``unet``
    (:func:`mmalign.diffusion.speed.apply_speed_options`); returns what was applied."""
    return apply_speed_options(
        unet, attention=cfg.model.attn_implementation, gradient_checkpointing=cfg.model.gradient_checkpointing,
        channels_last=cfg.model.channels_last, compile=cfg.model.compile, device=device,
    )


class LazyEMA:
    """EMA of the UNet (diffusers ``EMAModel``) for full fine-tuning.

    The shared loop calls ``step_fn`` before each optimizer step, so the EMA update for optimizer step k is applied
    at the start of the next micro-batch (or by :meth:`finish`) — the same sequence of averages, one call later.
    """

    def __init__(self, unet, decay: float, accelerator) -> None:
        from diffusers.training_utils import EMAModel

        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.ema = EMAModel(self.params, decay=decay)
        self.ema.to(accelerator.device)
        self.accelerator, self.pending = accelerator, False

    def before_micro_batch(self) -> None:
        if self.pending:
            self.ema.step(self.params)
        self.pending = self.accelerator.sync_gradients

    def finish(self) -> None:
        if self.pending:
            self.ema.step(self.params)
            self.pending = False
        self.ema.copy_to(self.params)
