"""The parts ``recipes/video.py`` builds from a :class:`~mmalign.mllm.video.config.VideoRecipeConfig`: input checks,
model + processor, the dataset and step function of a method, per-stage LoRA and train settings, the toy metric."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from mmalign.config import ConfigError, require_paths
from mmalign.data.skipping import SkipCounter
from mmalign.data.video_rows import read_records
from mmalign.mllm.video.config import StageConfig, VideoModelConfig, VideoRecipeConfig
from mmalign.mllm.video.curriculum import StageAdapter
from mmalign.mllm.video.dataset import VideoPreferenceDataset
from mmalign.mllm.video.methods import METHODS, SPECS
from mmalign.mllm.video.steps import StepFn, make_pair_step, make_rrpo_step, sft_step
from mmalign.objectives.rrpo import rrpo_defaults
from mmalign.reference import frozen_copy
from mmalign.train_config import TrainConfig


def check_inputs(cfg: VideoRecipeConfig) -> None:
    """Methods known and input files present (before any model loads); ``tiny:`` models need no folder."""
    for m in [cfg.method.name] + [s.method for s in cfg.stages]:
        if m not in METHODS:
            raise ConfigError(f"method '{m}' is not one of {', '.join(METHODS)}")
    if not cfg.model.pretrained.startswith("tiny:"):
        require_paths(**{"model.pretrained": cfg.model.pretrained})
    if cfg.stages:
        require_paths(**{f"stages.{i}.data": s.data for i, s in enumerate(cfg.stages)})
    else:
        require_paths(**{"data.path": cfg.data.path})


def load_video_llm(cfg: VideoModelConfig) -> tuple[torch.nn.Module, Any]:
    """``(model, processor)`` through the one loader :func:`mmalign.mllm.model.load_vlm` (pad token set,
    dropout off); the ``model:`` block is the VLM one."""
    from mmalign.mllm.model import load_vlm

    return load_vlm(cfg)


def build_dataset(cfg: VideoRecipeConfig, method: str, path: str, processor: Any,
                  records: list | None = None) -> VideoPreferenceDataset:
    """The data set of ``method`` on the rows of ``path`` (``records``: those rows, already read); a VDPO item
    perturbs its video as ``method.vdpo.*`` says (the other items ignore those options)."""
    vdpo = cfg.method.vdpo
    records = read_records(path, cfg.data.media_root) if records is None else records
    records = records[:cfg.data.max_rows] if cfg.data.max_rows else records
    return VideoPreferenceDataset(
        records, method, cfg.video, tokenizer=processor.tokenizer, perturbations=vdpo.perturbations,
        magnitude=vdpo.magnitude, frames_per_clip=vdpo.frames_per_clip, seed=cfg.train.seed,
        skips=SkipCounter(len(records), cfg.data.max_bad_fraction, cfg.data.on_bad_row, what="rows"),
    )


def sft_builder(cfg: VideoRecipeConfig, ref_model: torch.nn.Module | None) -> StepFn:
    return sft_step


def pair_builder(cfg: VideoRecipeConfig, ref_model: torch.nn.Module | None) -> StepFn:
    beta = cfg.method.beta if cfg.method.beta is not None else 0.1
    return make_pair_step(beta, cfg.method.loss_type, cfg.method.sft_weight, ref_model,
                          label_smoothing=cfg.method.label_smoothing, gamma=cfg.method.gamma)


def rrpo_builder(cfg: VideoRecipeConfig, ref_model: torch.nn.Module | None) -> StepFn:
    """RRPO with ``method.beta`` (the shared temperature) and ``method.rrpo.alpha`` / ``kl_chunk_size``; a value
    left null is the official run script's default for ``model.family``."""
    defaults = rrpo_defaults(cfg.model.family)
    beta = cfg.method.beta if cfg.method.beta is not None else defaults["beta"]
    rrpo = cfg.method.rrpo
    alpha = rrpo.alpha if rrpo.alpha is not None else defaults["alpha"]
    return make_rrpo_step(beta, alpha, ref_model, rrpo.kl_chunk_size)


def build_step(cfg: VideoRecipeConfig, method: str, ref_model: torch.nn.Module | None) -> StepFn:
    """The step of ``method``; ``ref_model=None`` means the reference is the policy with its adapter off."""
    return SPECS[method].hook("step")(cfg, ref_model)


def build_reference(cfg: VideoRecipeConfig, model: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
    """A frozen copy of the base on ``device`` for full fine-tuning of a method with a reference; with LoRA the
    reference is the policy with its adapter off (None)."""
    if cfg.lora.enabled or not SPECS[cfg.method.name].needs_reference:
        return None
    return frozen_copy(model, device)


def lora_for(cfg: VideoRecipeConfig, stage: StageConfig | None = None) -> StageAdapter:
    """The fresh adapter of ``stage``: the ``lora:`` block with the stage's own rank / alpha / vision setting where
    given."""
    lora = dataclasses.replace(
        cfg.lora, rank=(stage.lora_rank if stage and stage.lora_rank else cfg.lora.rank),
        alpha=(stage.lora_alpha if stage and stage.lora_alpha else cfg.lora.alpha),
    )
    if lora.rank < 1:
        raise ConfigError("curriculum stages train LoRA adapters: set lora.rank (or the stage's lora_rank) > 0")
    frozen = stage.freeze_vision if stage and stage.freeze_vision is not None else cfg.model.freeze_vision
    return StageAdapter(lora, train_vision=not frozen, seed=cfg.train.seed)


def steps_for(stage: StageConfig, n_items: int, tcfg: TrainConfig) -> int:
    """Optimizer steps of a stage: ``max_steps`` when set, else ``ceil(items * epochs / (batch * grad_accum))``."""
    if stage.max_steps > 0:
        return stage.max_steps
    return max(1, math.ceil(n_items * stage.epochs / (tcfg.batch_size * tcfg.grad_accum)))


def stage_train_config(cfg: VideoRecipeConfig, stage: StageConfig, n_items: int) -> TrainConfig:
    """``cfg.train`` with the stage's step count and learning rate."""
    return dataclasses.replace(cfg.train, max_steps=steps_for(stage, n_items, cfg.train),
                               lr=stage.lr if stage.lr is not None else cfg.train.lr)
