"""Checkpoints of the loop through accelerate: what a checkpoint saves of the model (the save/load hooks), writing
one atomically, the final one an export falls back on, and ``train.resume``. The folder layout and the loop
counters (:class:`~mmalign.checkpoint.LoopState`) are :mod:`mmalign.checkpoint`'s."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mmalign import checkpoint as ckpt
from mmalign import disk_errors
from mmalign.config_error import ConfigError
from mmalign.train_config import TrainConfig


def register_state_hooks(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Make ``accelerator.save_state`` / ``load_state`` save and load only the trainable parameters of ``model``
    (the unwrapped model)."""
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: save_hook(model, weights, folder))
    accelerator.register_load_state_pre_hook(lambda models, folder: load_hook(model, models, folder))


def save_hook(model: torch.nn.Module, weights: list, folder: str) -> None:
    """Save only trainable parameters (keeps LoRA checkpoints small).

    Under DeepSpeed / FSDP accelerate saves the sharded model itself and passes no ``weights``; the
    parameters here are shards (ZeRO-3, DTensors), so nothing is written (no trainable.safetensors).
    """
    if not weights:
        return
    weights.clear()
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    ckpt.save_trainable(model, folder)


def load_hook(model: torch.nn.Module, models: list, folder: str) -> None:
    if not models:  # DeepSpeed / FSDP: accelerate already loaded the sharded model itself
        return
    models.clear()
    ckpt.load_trainable(model, folder)


def write_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int,
                     state: ckpt.LoopState, run_config: dict[str, Any] | None = None) -> None:
    tmp = ckpt.temp_path(output_dir, step)

    def survivor() -> str:
        return f"the last complete checkpoint is {ckpt.latest_checkpoint(output_dir) or 'none (no checkpoint yet)'}"

    with disk_errors.writing(tmp, survivor, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
        if accelerator.is_main_process:
            tmp.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt.save_loop_state(tmp, state)
            if run_config is not None:
                ckpt.save_run_config(tmp, run_config)
            ckpt.commit(output_dir, step, keep)
        accelerator.wait_for_everyone()


def save_final_checkpoint(accelerator: Accelerator, cfg: TrainConfig, output_dir: str | os.PathLike,
                          summary: dict[str, Any]) -> Path:
    """The checkpoint of the last step of ``summary`` (written now if the run has none): what is left to re-export
    from (``mmalign export``) or resume from when the export after ``train`` fails. Call on every process."""
    output_dir = Path(output_dir)
    final = ckpt.final_path(output_dir, summary["steps"])
    if not (final / ckpt.STATE_FILE).is_file():
        state = ckpt.LoopState.from_dict(summary["trainer_state"], source="summary trainer_state")
        write_checkpoint(accelerator, output_dir, summary["steps"], cfg.keep_checkpoints, state)
    return final


def resume(cfg: TrainConfig, accelerator: Accelerator, output_dir: Path, state: ckpt.LoopState) -> ckpt.LoopState:
    """``train.resume``: load the model / optimizer / scheduler / RNG states of a checkpoint; return its loop counters
    (``state``, the fresh run's, when there is nothing to resume)."""
    resume_from = ckpt.resolve_resume(cfg.resume, output_dir)
    if resume_from is None:
        return state
    rng_problem = ckpt.rng_state_problem(resume_from, accelerator.process_index)
    if rng_problem and cfg.resume_require_rng_state:
        raise ConfigError(
            f"train.resume: checkpoint {resume_from} cannot restore the random state: {rng_problem}; set "
            "train.resume_require_rng_state=false to resume anyway (randomness then differs from an "
            "uninterrupted run)"
        )
    if rng_problem:
        accelerator.print(f"warning: resuming without the saved random state: {rng_problem}")
    accelerator.load_state(str(resume_from))
    saved = ckpt.load_loop_state(resume_from)
    changed = saved.layout_changes(state)
    resumed = dataclasses.replace(saved, micro_per_epoch=state.micro_per_epoch, world_size=state.world_size)
    accelerator.print(f"resumed from {resume_from} at step {resumed.step}")
    if changed:
        accelerator.print(f"warning: resuming with a different data layout {changed} (saved, now): the data "
                          "order after resume differs from the interrupted run's")
    return resumed
