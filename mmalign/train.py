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

import dataclasses
import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs, DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from mmalign import checkpoint as ckpt
from mmalign import disk_errors
from mmalign.config import ConfigError
from mmalign.interrupt import StopRequest, TrainingInterrupted
from mmalign.keep_weights import KeptWeights
from mmalign.run_lock import lock_run_folder
from mmalign.train_config import LR_SCHEDULERS, OPTIMIZER_EXTRAS, OPTIMIZERS, TrainConfig
from mmalign.validate import check_values

__all__ = [  # TrainConfig and its choices live in the light mmalign.train_config (imported by config schemas)
    "LR_SCHEDULERS", "OPTIMIZERS", "OPTIMIZER_EXTRAS", "EpochSampler", "NonFiniteLossError", "StepFn", "TrainConfig",
    "build_optimizer", "finish_distributed", "make_accelerator", "save_final_checkpoint", "train", "write_summary",
]

StepFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, Any]]]


class EpochSampler(Sampler[int]):
    """A random permutation that depends only on ``(seed, epoch)``: resumable and rank-independent. With
    ``weights``: ``length`` draws with replacement, P(i) proportional to ``weights[i]`` (``WeightedRandomSampler``
    semantics; Diffusion-KTO's positive-ratio sampler), from the same ``(seed, epoch)`` generator."""

    def __init__(self, length: int, seed: int, shuffle: bool = True, weights: Sequence[float] | None = None) -> None:
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        if self.weights is not None and len(self.weights) != length:
            raise ValueError(f"sampler weights: {len(self.weights)} for {length} examples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            return iter(torch.multinomial(self.weights, self.length, replacement=True, generator=g).tolist())
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite_steps`` consecutive NaN/inf steps."""


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("no trainable parameters: check the LoRA / fine-tuning settings")
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer in ("adamw", "adamw_fused"):
        fused = cfg.optimizer == "adamw_fused" and all(p.is_cuda for p in params)
        return torch.optim.AdamW(
            params, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, fused=fused or None, **kw
        )
    if cfg.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ImportError("train.optimizer=adamw_8bit needs `pip install mmalign[bnb]`") from exc
        return bnb.optim.AdamW8bit(params, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, **kw)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, scale_parameter=False, relative_step=False, clip_threshold=1.0, **kw)
    raise ValueError(f"train.optimizer: unknown optimizer '{cfg.optimizer}' (adamw, adamw_fused, adamw_8bit, adafactor)")


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


SHARDING_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}
"""Environment flags ``accelerate launch --config_file recipes/accelerate/{fsdp,deepspeed_zero*}.yaml`` sets."""


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


def _check_world_size(accelerator: Accelerator) -> None:
    """Refuse to run N independent copies of the job when a launcher started N processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE) but the Accelerator sees "
            f"{accelerator.num_processes}: pass cpu=True on machines without GPUs (make_accelerator does)"
        )


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)


def write_summary(output_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Merge ``summary`` into ``<output_dir>/summary.json`` (atomic replace)."""
    path = Path(output_dir) / "summary.json"
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text())
    data.update(summary)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path


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
    example): sample with replacement in proportion to them instead of a permutation (see :class:`EpochSampler`).
    """
    check_values(cfg, "train.")  # ConfigError naming the key (load_config already checked recipe configs)
    accelerator = accelerator or make_accelerator(cfg, output_dir)
    run = _prepare(cfg, accelerator, Path(output_dir), model, dataset, collate_fn, sample_weights)
    run.run_config = run_config  # recorded in every checkpoint (run_config.json: what mmalign.resume_check compares)
    _resume(run)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("mmalign", config=_flat_hparams(run_config or {}))
    meter, validation = _Meter(cfg.max_steps, run.state.step, cfg.progress_bar and accelerator.is_local_main_process), {}
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
        return _finish(run, meter, validation)


@dataclass
class _Run:
    """The prepared pieces of one :func:`train` call, shared by the loop's helpers; ``state`` is what a
    checkpoint saves and a resume restores."""

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
        _write_checkpoint(self.accelerator, self.output_dir, self.state.step, self.cfg.keep_checkpoints, self.state,
                          self.run_config)


@dataclass
class _Meter:
    """The metrics of the optimizer step being accumulated (device tensors: no host sync per micro-batch; read at
    log steps, :func:`_host_floats`), the logged history, throughput and the progress bar."""

    total_steps: int
    initial_step: int
    show_progress: bool
    loss: Any = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    samples_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    t_start: float = field(default_factory=time.perf_counter)
    progress: Any = None

    def __post_init__(self) -> None:
        self.progress = tqdm(total=self.total_steps, initial=self.initial_step, desc="train",
                             disable=not self.show_progress)

    def add(self, loss: torch.Tensor, metrics: dict[str, Any], samples: int) -> None:
        self.loss = self.loss + loss
        for k, v in metrics.items():
            self.metrics[k] = self.metrics.get(k, 0.0) + _detached(v)
        self.count += 1
        self.samples_seen += samples

    def pop_record(self, grad_norm: Any, lr: float) -> dict[str, Any]:
        """The step's mean loss and metrics (tensors until a log step); start the next step's accumulation."""
        record = {"loss": self.loss / self.count, "grad_norm": _detached(grad_norm), "lr": lr}
        record.update({k: v / self.count for k, v in self.metrics.items()})
        self.loss, self.metrics, self.count = 0.0, {}, 0
        return record


def _prepare(cfg: TrainConfig, accelerator: Accelerator, output_dir: Path, model: torch.nn.Module, dataset: Dataset,
             collate_fn: Callable[[list[Any]], Any] | None, sample_weights: Sequence[float] | None) -> _Run:
    """Seed, lock the run folder, build the optimizer, LR schedule and data order, and hand them to accelerate."""
    _check_world_size(accelerator)
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
        # Reseeded every epoch (_micro_batches), so worker seeds are a function of (seed, epoch) as the data order is.
        generator=loader_rng,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: _save_hook(unwrapped, weights, folder))
    accelerator.register_load_state_pre_hook(lambda models, folder: _load_hook(unwrapped, models, folder))
    if len(loader) == 0:
        raise ValueError(
            f"dataset has {len(dataset)} examples, fewer than one global batch "
            f"({cfg.batch_size} x {accelerator.num_processes} processes)"
        )
    state = ckpt.LoopState(micro_per_epoch=len(loader), world_size=accelerator.num_processes)
    return _Run(cfg, accelerator, output_dir, model, params, optimizer, scheduler, loader, sampler, loader_rng, state)


def _resume(run: _Run) -> None:
    """``train.resume``: load the model / optimizer / scheduler / RNG states and the loop counters of a checkpoint."""
    cfg, accelerator = run.cfg, run.accelerator
    resume_from = ckpt.resolve_resume(cfg.resume, run.output_dir)
    if resume_from is None:
        return
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
    changed = saved.layout_changes(run.state)
    run.state = dataclasses.replace(saved, micro_per_epoch=run.state.micro_per_epoch, world_size=run.state.world_size)
    accelerator.print(f"resumed from {resume_from} at step {run.state.step}")
    if changed:
        accelerator.print(f"warning: resuming with a different data layout {changed} (saved, now): the data "
                          "order after resume differs from the interrupted run's")


def _micro_batches(run: _Run) -> Iterator[Any]:
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


def _micro_step(run: _Run, meter: _Meter, step_fn: StepFn, batch: Any) -> None:
    """Forward and backward of one micro-batch; a non-finite loss backpropagates zeros and is accumulated as NaN."""
    loss, metrics = step_fn(run.model, batch)
    finite = torch.isfinite(loss.detach())
    run.accelerator.backward(torch.where(finite, loss, torch.zeros_like(loss)))
    recorded = torch.where(finite, _detached(loss), torch.full_like(_detached(loss), math.nan))
    meter.add(recorded, metrics, run.cfg.batch_size * run.accelerator.num_processes)


def _optimizer_step(run: _Run, loss_sum: Any, stop_requested: bool) -> tuple[bool, Any, bool]:
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


def _end_step(run: _Run, meter: _Meter, ok: bool, grad_norm: Any) -> int:
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
        _log_step(run, meter, record)
    return state.step


def _log_step(run: _Run, meter: _Meter, record: dict[str, Any]) -> None:
    """Reduce the step's metrics over processes, add throughput and memory, log them and keep them in the history."""
    accelerator = run.accelerator
    record = _reduce(accelerator, _host_floats(record, accelerator.device))
    record["samples_per_s"] = meter.samples_seen / max(time.perf_counter() - meter.t_start, 1e-9)
    record["peak_mem_gib"] = _peak_memory_gib(accelerator.device)
    meter.history.append({"step": run.state.step, **record})
    accelerator.log(record, step=run.state.step)
    meter.progress.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "lr") if k in record})


def _finish(run: _Run, meter: _Meter, validation: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json`` and close the trackers; return the summary."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    summary = {
        "steps": run.state.step,
        "skipped_steps": run.state.skipped_steps,
        "loss_scale_skips": run.state.loss_scale_skips,
        "world_size": accelerator.num_processes,
        "train_seconds": time.perf_counter() - meter.t_start,
        "final": meter.history[-1] if meter.history else {},
        "history": meter.history,
        "validation": validation,
        "trainer_state": run.state.to_dict(),  # what save_final_checkpoint writes when an export fails
    }
    if accelerator.is_main_process:
        write_summary(run.output_dir, summary)
    # Close the trackers only: Accelerator.end_training() would also destroy the process group, which broke
    # a second train() in the same processes (curriculum stages) under torchrun / accelerate launch. A recipe
    # calls accelerator.end_training() itself once, at the very end.
    for tracker in accelerator.trackers:
        tracker.finish()
    return summary


def save_final_checkpoint(accelerator: Accelerator, cfg: TrainConfig, output_dir: str | os.PathLike,
                          summary: dict[str, Any]) -> Path:
    """The checkpoint of the last step of ``summary`` (written now if the run has none): what is left to re-export
    from (``mmalign export``) or resume from when the export after :func:`train` fails. Call on every process."""
    output_dir = Path(output_dir)
    final = ckpt.final_path(output_dir, summary["steps"])
    if not (final / ckpt.STATE_FILE).is_file():
        state = ckpt.LoopState.from_dict(summary["trainer_state"], source="summary trainer_state")
        _write_checkpoint(accelerator, output_dir, summary["steps"], cfg.keep_checkpoints, state)
    return final


def finish_distributed() -> None:
    """End of a recipe process: barrier, then destroy the default process group if one was created (``train``
    leaves it alive so several stages can run in one process; torch warns at exit about a group never destroyed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _finite_flags(accelerator: Accelerator, loss_sum: Any, grad_norm: Any, stop: bool = False
                  ) -> tuple[bool, bool, bool]:
    """One decision for all ranks (one collective, one host sync per optimizer step): (every rank's loss finite,
    grad norm finite everywhere, some rank was asked to stop)."""
    values = [_detached(loss_sum), _detached(grad_norm)]
    flags = torch.isfinite(torch.stack([torch.as_tensor(v).to(accelerator.device) for v in values])).float()
    flags = torch.cat([flags, torch.tensor([float(stop)], device=flags.device)])
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, reduction="sum")
    ok = flags.tolist()
    return ok[0] == accelerator.num_processes, ok[1] == accelerator.num_processes, ok[2] > 0


def _stop_after_signal(run: _Run, meter: _Meter, signal_name: str) -> None:
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


def _detached(value: Any) -> Any:
    """A metric without a host sync: tensors → detached float32 mean on their device; numbers → float."""
    return value.detach().float().mean() if torch.is_tensor(value) else float(value)


def _host_floats(record: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Python floats of a record of tensors and numbers, with one device→host copy for all tensors."""
    keys = [k for k, v in record.items() if torch.is_tensor(v)]
    out = {k: float(v) for k, v in record.items() if not torch.is_tensor(v)}
    if keys:
        values = torch.stack([record[k].to(device) for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in record}


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def _reduce(accelerator: Accelerator, record: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over the processes that logged it.

    Ranks may log different metric names (e.g. KTO batches without undesirable examples), so the key sets are
    gathered first; then one sum-reduction of ``[values; presence]`` gives per-key means.
    """
    if accelerator.num_processes == 1:
        return record
    from accelerate.utils import gather_object

    keys = sorted(set(gather_object(list(record))))
    values = [record.get(k, 0.0) for k in keys] + [float(k in record) for k in keys]
    totals = accelerator.reduce(torch.tensor(values, device=accelerator.device, dtype=torch.float64), reduction="sum")
    sums, counts = totals[: len(keys)], totals[len(keys):]
    return {k: (s / c) for k, s, c in zip(keys, sums.tolist(), counts.tolist()) if c > 0}


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


def _save_hook(model: torch.nn.Module, weights: list, folder: str) -> None:
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


def _load_hook(model: torch.nn.Module, models: list, folder: str) -> None:
    if not models:  # DeepSpeed / FSDP: accelerate already loaded the sharded model itself
        return
    models.clear()
    ckpt.load_trainable(model, folder)


def _write_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int,
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


def _flat_hparams(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat_hparams(v, f"{prefix}{k}."))
        elif isinstance(v, int | float | str | bool):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = str(v)
    return out
