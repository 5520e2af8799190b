"""The Accelerator every recipe uses, the checks that a launch is what it claims, and the end of a process."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs, DataLoaderConfiguration, ProjectConfiguration

from mmalign.train_config import TrainConfig

SHARDING_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}
"""Environment flags ``accelerate launch --config_file recipes/accelerate/{fsdp,deepspeed_zero*}.yaml`` sets."""


def make_accelerator(cfg: TrainConfig, output_dir: str | os.PathLike, log_with: str | None = "tensorboard") -> Accelerator:
    """The Accelerator every recipe uses (one per process).

    Under torchrun on a machine without GPUs, accelerate 1.15 joins the processes only when asked for
    ``cpu=True`` (else each process silently trains alone, all writing the same output_dir), so that is
    set when ``WORLD_SIZE > 1`` and no accelerator is available.
    """
    _refuse_sharding_without_accelerator()
    return Accelerator(
        cpu=_distributed_without_accelerator(),
        kwargs_handlers=[AutocastKwargs(enabled=cfg.autocast)],
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs")),
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
    )


def _refuse_sharding_without_accelerator() -> None:
    """accelerate 1.15 builds FSDP only for multi-GPU/XPU/NPU states and DeepSpeed only with ``cpu=False``; on a
    machine without an accelerator both silently become plain (DDP or single-process) training, so the sharded
    save/load paths a user asked for would never run. Refuse instead of pretending."""
    requested = [name for var, name in SHARDING_LAUNCHES.items() if os.environ.get(var, "").lower() == "true"]
    if requested and not torch.accelerator.is_available():
        raise RuntimeError(
            f"{requested[0]} was requested (accelerate launch --config_file ...) but this machine has no GPU: "
            f"accelerate runs {requested[0]} only on accelerators and would silently fall back to unsharded "
            "training on CPU. Use recipes/accelerate/multi_gpu.yaml (data parallel, works on CPU) or run on GPUs."
        )


def _distributed_without_accelerator() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()


def check_world_size(accelerator: Accelerator) -> None:
    """Refuse to run N independent copies of the job when a launcher started N processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE) but the Accelerator sees "
            f"{accelerator.num_processes}: pass cpu=True on machines without GPUs (make_accelerator does)"
        )


def finish_distributed() -> None:
    """End of a recipe process: barrier, then destroy the default process group if one was created (``train``
    leaves it alive so several stages can run in one process; torch warns at exit about a group never destroyed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
