"""The parts ``recipes/video.py`` builds from a :class:`~mmalign.mllm.video.config.VideoRecipeConfig`: input checks,
model + processor, the dataset and step function of a method, per-stage LoRA and train settings, the toy metric."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from mmalign.config import ConfigError, require_paths
from mmalign.data.skipping import SkipCounter
from mmalign.data.video_rows import read_records
from mmalign.mllm.video.config import ModelConfig, StageConfig, VideoRecipeConfig
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


def load_video_llm(cfg: ModelConfig) -> tuple[torch.nn.Module, Any]:
    """``(model, processor)`` through the one loader :func:`mmalign.mllm.model.load_vlm` (pad token set,
    dropout off)."""
    from mmalign.mllm.model import load_vlm
    from mmalign.mllm.model_config import VLMModelConfig

    return load_vlm(VLMModelConfig(pretrained=cfg.pretrained, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                   attn_implementation=cfg.attn_implementation))


def build_dataset(cfg: VideoRecipeConfig, method: str, path: str, processor: Any) -> VideoPreferenceDataset:
    records = read_records(path, cfg.data.video_root)
    return VideoPreferenceDataset(
        records, method, cfg.video, tokenizer=processor.tokenizer, perturbations=cfg.method.perturbations,
        magnitude=cfg.method.magnitude, frames_per_clip=cfg.method.frames_per_clip, seed=cfg.train.seed,
        skips=SkipCounter(len(records), cfg.data.max_bad_fraction, cfg.data.on_bad_row, what="rows"),
    )


def sft_builder(cfg: VideoRecipeConfig, ref_model: torch.nn.Module | None) -> StepFn:
    return sft_step


def pair_builder(cfg: VideoRecipeConfig, ref_model: torch.nn.Module | None) -> StepFn:
    beta = cfg.method.beta if cfg.method.beta is not None else 0.1
    return make_pair_step(beta, cfg.method.loss_type, cfg.method.sft_weight, ref_model,
                          label_smoothing=cfg.method.label_smoothing, gamma=cfg.method.gamma)


def rrpo_builder(cfg: VideoRecipeConfig, ref_model: torch.nn.Module | None) -> StepFn:
    defaults = rrpo_defaults(cfg.model.family)
    beta = cfg.method.beta if cfg.method.beta is not None else defaults["beta"]
    alpha = cfg.method.alpha if cfg.method.alpha is not None else defaults["alpha"]
    return make_rrpo_step(beta, alpha, ref_model, cfg.method.kl_chunk_size)


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
    train_vision = stage.train_vision if stage and stage.train_vision is not None else cfg.model.train_vision
    return StageAdapter(lora, train_vision=train_vision, seed=cfg.train.seed)


def steps_for(stage: StageConfig, n_items: int, tcfg: TrainConfig) -> int:
    """Optimizer steps of a stage: ``max_steps`` when set, else ``ceil(items * epochs / (batch * grad_accum))``."""
    if stage.max_steps > 0:
        return stage.max_steps
    return max(1, math.ceil(n_items * stage.epochs / (tcfg.batch_size * tcfg.grad_accum)))


def stage_train_config(cfg: VideoRecipeConfig, stage: StageConfig, n_items: int) -> TrainConfig:
    """``cfg.train`` with the stage's step count and learning rate."""
    return dataclasses.replace(cfg.train, max_steps=steps_for(stage, n_items, cfg.train),
                               lr=stage.lr if stage.lr is not None else cfg.train.lr)


def export_run(cfg: VideoRecipeConfig, model: torch.nn.Module, processor: Any, accelerator: Any,
               summary: dict[str, Any]) -> torch.nn.Module:
    """The main process writes ``adapter/`` (LoRA: peft folder + processor) or ``model/`` (full fine-tuning: a
    folder loadable as ``model.pretrained``); a failed export keeps a checkpoint (:mod:`mmalign.safe_export`).
    Returns the plain model (adapter merged) for the toy metric."""
    from mmalign.mllm.export import merge_adapter, save_trained
    from mmalign.safe_export import export_or_keep_checkpoint

    if accelerator.is_main_process:
        folder = Path(cfg.output_dir) / ("adapter" if cfg.lora.enabled else "model")
        export_or_keep_checkpoint(lambda: save_trained(model, processor, folder), accelerator, cfg.train,
                                  cfg.output_dir, summary)
    return merge_adapter(model)
