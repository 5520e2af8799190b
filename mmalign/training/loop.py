"""The one accelerate training loop shared by every recipe.

A recipe builds its pieces (model with trainable parameters, dataset, collate function) and a
``step_fn(model, batch) -> (loss, metrics)`` that runs policy and reference forwards and applies an
objective from :mod:`mmalign.objectives`. This loop does the rest: gradient accumulation, clipping,
mixed precision, LR schedule, NaN/inf guard, tqdm + TensorBoard metrics, atomic checkpoints,
``resume: latest`` and a final ``summary.json``.

Data order is a pure function of ``(seed, epoch)``, and checkpoints store the RNG states, so a run
resumed from step k reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from mmalign import checkpoint as ckpt
from mmalign.interrupt import StopRequest, TrainingInterrupted
from mmalign.train_config import TrainConfig
from mmalign.training.checkpointing import resume
from mmalign.training.distributed import make_accelerator
from mmalign.training.keep_weights import KeptWeights
from mmalign.training.metrics import Meter, detached, finish_summary, flat_hparams, log_step
from mmalign.training.run import Run, prepare_run
from mmalign.validate import check_values

StepFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, Any]]]


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite_steps`` consecutive NaN/inf steps."""


def train(
    cfg: TrainConfig,
    *,
    output_dir: str | os.PathLike,
    model: torch.nn.Module,
    dataset: Dataset,
    step_fn: StepFn,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    accelerator: Accelerator | None = None,
    validate_fn: Callable[[int], dict[str, Any] | None] | None = None,
    validate_every: int = 0,
    run_config: dict[str, Any] | None = None,
    sample_weights: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Run ``cfg.max_steps`` optimizer steps of ``step_fn`` over ``dataset``; return the summary.

    ``model`` holds the trainable parameters (``requires_grad``); only those are optimised and
    checkpointed. ``step_fn`` receives the accelerate-prepared model (DDP-wrapped when distributed) and
    one collated micro-batch already moved to the device, and returns the scalar loss and a dict of
    metrics (tensors or floats). ``validate_fn(step)`` runs on every process every ``validate_every``
    steps and at the end; what it returns is logged and stored in the summary. ``sample_weights`` (one per
    example): sample with replacement in proportion to them instead of a permutation (see
    :class:`~mmalign.training.sampler.EpochSampler`).
    """
    check_values(cfg, "train.")  # ConfigError naming the key (load_config already checked recipe configs)
    accelerator = accelerator or make_accelerator(cfg, output_dir)
    run = prepare_run(cfg, accelerator, Path(output_dir), model, dataset, collate_fn, sample_weights)
    run.run_config = run_config  # recorded in every checkpoint (run_config.json: what mmalign.resume_check compares)
    run.state = resume(cfg, accelerator, run.output_dir, run.state)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("mmalign", config=flat_hparams(run_config or {}))
    meter, validation = Meter(cfg.max_steps, run.state.step, cfg.progress_bar and accelerator.is_local_main_process), {}
    run.model.train()
    kept = KeptWeights(accelerator, cfg, run.output_dir, run.state, accelerator.unwrap_model(run.model))
    # Ctrl-C / SIGTERM / SIGHUP: finish the step, checkpoint, exit 130 (mmalign.interrupt); a full disk anywhere
    # in the loop: the weights are written in the largest form that fits, and the error says where (keep_weights)
    with StopRequest() as stop, kept.during("training", signals=False, any_error=False):
        for batch in _micro_batches(run):
            with accelerator.accumulate(run.model):
                _micro_step(run, meter, step_fn, batch)
                if not accelerator.sync_gradients:
                    continue
                ok, grad_norm, stopping = _optimizer_step(run, meter.loss, stop.requested)
            step = _end_step(run, meter, ok, grad_norm)
            if run.checkpoint_due():
                run.save()
            if stopping:
                _stop_after_signal(run, meter, stop.signal_name or "a signal")
            if validate_fn is not None and validate_every and step % validate_every == 0 and step < cfg.max_steps:
                validation = _run_validation(accelerator, run.model, validate_fn, step)
            if step >= cfg.max_steps:
                break
    meter.progress.close()
    kept.register()  # the weights are in memory only: the export keeps them (mmalign.safe_export)
    with kept.during("the end of training (final checkpoint, validation, summary)"):  # Ctrl-C / full disk / error
        if cfg.checkpoint_at_end and not run.checkpoint_due():
            run.save()
        if validate_fn is not None:
            validation = _run_validation(accelerator, run.model, validate_fn, run.state.step)
        return finish_summary(accelerator, run.output_dir, run.state, meter, validation)


def _micro_batches(run: Run) -> Iterator[Any]:
    """The micro-batches still to train on, epoch after epoch from the saved position, each counted in the state."""
    while run.state.step < run.cfg.max_steps:
        epoch, offset = run.state.position()
        epoch_loader = run.accelerator.skip_first_batches(run.loader, offset) if offset else run.loader
        epoch_loader.set_epoch(epoch)  # accelerate's own epoch counter (and datasets with set_epoch)
        run.sampler.set_epoch(epoch)  # directly: accelerate does not forward it through SkipBatchSampler(BatchSamplerShard)
        run.loader_rng.manual_seed(run.cfg.seed * 100_003 + epoch)
        for batch in epoch_loader:
            run.state.micro_batches += 1
            yield batch


def _micro_step(run: Run, meter: Meter, step_fn: StepFn, batch: Any) -> None:
    """Forward and backward of one micro-batch; a non-finite loss backpropagates zeros and is accumulated as NaN."""
    loss, metrics = step_fn(run.model, batch)
    finite = torch.isfinite(loss.detach())
    run.accelerator.backward(torch.where(finite, loss, torch.zeros_like(loss)))
    recorded = torch.where(finite, detached(loss), torch.full_like(detached(loss), math.nan))
    meter.add(recorded, metrics, run.cfg.batch_size * run.accelerator.num_processes)


def _optimizer_step(run: Run, loss_sum: Any, stop_requested: bool) -> tuple[bool, Any, bool]:
    """Clip, decide for all ranks, then step (or skip a non-finite step); return (stepped, grad norm, stop now)."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    if cfg.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(run.params, cfg.max_grad_norm)  # unscales fp16 grads
    else:
        if accelerator.scaler is not None:
            accelerator.unscale_gradients()
        grad_norm = _grad_norm(run.params)
    loss_ok, grad_ok, stopping = _finite_flags(accelerator, loss_sum, grad_norm, stop_requested)
    # fp16: with a GradScaler, a non-finite gradient of a finite loss is a loss-scale overflow.
    # optimizer.step() lets the scaler skip the update and lower its scale; skipping the call
    # here would freeze the scale and turn every later step into an overflow.
    ok = loss_ok and (grad_ok or accelerator.scaler is not None)
    if ok:
        run.optimizer.step()
        state.nonfinite_run = 0
        state.loss_scale_skips += int(not grad_ok)
    else:
        state.nonfinite_run += 1
        state.skipped_steps += 1
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return ok, grad_norm, stopping


def _finite_flags(accelerator: Accelerator, loss_sum: Any, grad_norm: Any, stop: bool = False
                  ) -> tuple[bool, bool, bool]:
    """One decision for all ranks (one collective, one host sync per optimizer step): (every rank's loss finite,
    grad norm finite everywhere, some rank was asked to stop)."""
    values = [detached(loss_sum), detached(grad_norm)]
    flags = torch.isfinite(torch.stack([torch.as_tensor(v).to(accelerator.device) for v in values])).float()
    flags = torch.cat([flags, torch.tensor([float(stop)], device=flags.device)])
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, reduction="sum")
    ok = flags.tolist()
    return ok[0] == accelerator.num_processes, ok[1] == accelerator.num_processes, ok[2] > 0


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def _end_step(run: Run, meter: Meter, ok: bool, grad_norm: Any) -> int:
    """Count the optimizer step, stop a run of non-finite steps, log at log steps; return the step number."""
    cfg, state = run.cfg, run.state
    state.step += 1
    meter.progress.update(1)
    record = meter.pop_record(grad_norm, run.scheduler.get_last_lr()[0])
    if not ok:
        run.accelerator.print(f"step {state.step}: non-finite loss/grad, optimizer step skipped "
                              f"({state.nonfinite_run} in a row)")
        if state.nonfinite_run >= cfg.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{state.nonfinite_run} consecutive non-finite steps (train.max_nonfinite_steps="
                f"{cfg.max_nonfinite_steps}); last finite checkpoint: {ckpt.latest_checkpoint(run.output_dir)}"
            )
    if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
        log_step(run.accelerator, meter, state.step, record)
    return state.step


def _stop_after_signal(run: Run, meter: Meter, signal_name: str) -> None:
    """Write a checkpoint at the current step (unless one was just written), say where and how to resume, exit 130."""
    meter.progress.close()
    if not run.checkpoint_due():
        run.save()
    step, output_dir = run.state.step, run.output_dir
    where = ckpt.final_path(output_dir, step)
    message = (f"training stopped by {signal_name} after step {step}/{run.cfg.max_steps}; checkpoint: {where}\n"
               f"resume: run the same command with train.resume=latest (output_dir {output_dir})")
    run.accelerator.print(message)
    for tracker in run.accelerator.trackers:
        tracker.finish()
    raise TrainingInterrupted(message, where)


def _run_validation(accelerator: Accelerator, model: torch.nn.Module, fn: Callable, step: int) -> dict[str, Any]:
    model.eval()
    try:
        with torch.no_grad():
            result = fn(step) or {}
    finally:
        model.train()
    numeric = {f"val/{k}": v for k, v in result.items() if isinstance(v, int | float)}
    if numeric:
        accelerator.log(numeric, step=step)
    return result
