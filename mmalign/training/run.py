"""The prepared pieces of one ``train`` call: seed, run lock, optimizer, LR schedule, data order, all handed to
accelerate; ``Run.state`` is what a checkpoint saves and a resume restores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset

from mmalign import checkpoint as ckpt
from mmalign.run_lock import lock_run_folder
from mmalign.train_config import TrainConfig
from mmalign.training.checkpointing import register_state_hooks, write_checkpoint
from mmalign.training.distributed import check_world_size
from mmalign.training.optimizer import build_optimizer
from mmalign.training.sampler import EpochSampler


@dataclass
class Run:
    """The prepared pieces of one ``train`` call, shared by the loop's helpers; ``state`` is what a checkpoint saves
    and a resume restores."""

    cfg: TrainConfig
    accelerator: Accelerator
    output_dir: Path
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    loader: Any
    sampler: EpochSampler
    loader_rng: torch.Generator
    state: ckpt.LoopState
    run_config: dict[str, Any] | None = None

    def checkpoint_due(self) -> bool:
        """Whether ``checkpoint_every`` writes a checkpoint at the current step."""
        return bool(self.cfg.checkpoint_every) and self.state.step % self.cfg.checkpoint_every == 0

    def save(self) -> None:
        write_checkpoint(self.accelerator, self.output_dir, self.state.step, self.cfg.keep_checkpoints, self.state,
                         self.run_config)


def prepare_run(cfg: TrainConfig, accelerator: Accelerator, output_dir: Path, model: torch.nn.Module,
                dataset: Dataset, collate_fn: Callable[[list[Any]], Any] | None,
                sample_weights: Sequence[float] | None) -> Run:
    """Seed, lock the run folder, build the optimizer, LR schedule and data order, and hand them to accelerate."""
    check_world_size(accelerator)
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        note = lock_run_folder(output_dir)  # one run per folder (re-entrant: a recipe has usually locked it already)
        if note:
            accelerator.print(f"NOTE: {note}")
        ckpt.clean_temporaries(output_dir)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps
    )
    sampler = EpochSampler(len(dataset), cfg.seed, weights=sample_weights)
    loader_rng = torch.Generator()
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate_fn,
        num_workers=cfg.num_workers, drop_last=True, pin_memory=accelerator.device.type == "cuda",
        # Its own generator: iterating a DataLoader draws the workers' base seed from this generator, which
        # would otherwise be the global torch RNG, shifting the noise a step draws after a mid-epoch resume.
        # Reseeded every epoch (the loop's micro_batches), so worker seeds are a function of (seed, epoch) as the
        # data order is.
        generator=loader_rng,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    register_state_hooks(accelerator, accelerator.unwrap_model(model))
    if len(loader) == 0:
        raise ValueError(
            f"dataset has {len(dataset)} examples, fewer than one global batch "
            f"({cfg.batch_size} x {accelerator.num_processes} processes)"
        )
    state = ckpt.LoopState(micro_per_epoch=len(loader), world_size=accelerator.num_processes)
    return Run(cfg, accelerator, output_dir, model, params, optimizer, scheduler, loader, sampler, loader_rng, state)
