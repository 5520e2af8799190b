"""What the loop reports: the step's metrics as device tensors (no host sync per micro-batch), their mean over the
processes at log steps, throughput and memory, TensorBoard hyperparameters and ``summary.json``."""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from mmalign import checkpoint as ckpt


@dataclass
class Meter:
    """The metrics of the optimizer step being accumulated (device tensors: no host sync per micro-batch; read at
    log steps, :func:`host_floats`), the logged history, throughput and the progress bar."""

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
            self.metrics[k] = self.metrics.get(k, 0.0) + detached(v)
        self.count += 1
        self.samples_seen += samples

    def pop_record(self, grad_norm: Any, lr: float) -> dict[str, Any]:
        """The step's mean loss and metrics (tensors until a log step); start the next step's accumulation."""
        record = {"loss": self.loss / self.count, "grad_norm": detached(grad_norm), "lr": lr}
        record.update({k: v / self.count for k, v in self.metrics.items()})
        self.loss, self.metrics, self.count = 0.0, {}, 0
        return record


def log_step(accelerator: Accelerator, meter: Meter, step: int, record: dict[str, Any]) -> None:
    """Reduce the step's metrics over processes, add throughput and memory, log them and keep them in the history."""
    record = mean_over_processes(accelerator, host_floats(record, accelerator.device))
    record["samples_per_s"] = meter.samples_seen / max(time.perf_counter() - meter.t_start, 1e-9)
    record["peak_mem_gib"] = _peak_memory_gib(accelerator.device)
    meter.history.append({"step": step, **record})
    accelerator.log(record, step=step)
    meter.progress.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "lr") if k in record})


def finish_summary(accelerator: Accelerator, output_dir: Path, state: ckpt.LoopState, meter: Meter,
                   validation: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json`` and close the trackers; return the summary."""
    accelerator.wait_for_everyone()
    summary = {
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "loss_scale_skips": state.loss_scale_skips,
        "world_size": accelerator.num_processes,
        "train_seconds": time.perf_counter() - meter.t_start,
        "final": meter.history[-1] if meter.history else {},
        "history": meter.history,
        "validation": validation,
        "trainer_state": state.to_dict(),  # what save_final_checkpoint writes when an export fails
    }
    if accelerator.is_main_process:
        write_summary(output_dir, summary)
    # Close the trackers only: Accelerator.end_training() would also destroy the process group, which broke
    # a second train() in the same processes (curriculum stages) under torchrun / accelerate launch. A recipe
    # calls accelerator.end_training() itself once, at the very end.
    for tracker in accelerator.trackers:
        tracker.finish()
    return summary


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


def detached(value: Any) -> Any:
    """A metric without a host sync: tensors → detached float32 mean on their device; numbers → float."""
    return value.detach().float().mean() if torch.is_tensor(value) else float(value)


def host_floats(record: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Python floats of a record of tensors and numbers, with one device→host copy for all tensors."""
    keys = [k for k, v in record.items() if torch.is_tensor(v)]
    out = {k: float(v) for k, v in record.items() if not torch.is_tensor(v)}
    if keys:
        values = torch.stack([record[k].to(device) for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in record}


def mean_over_processes(accelerator: Accelerator, record: dict[str, float]) -> dict[str, float]:
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


def flat_hparams(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested run config as the flat ``{"a.b": scalar}`` that TensorBoard's hyperparameters take."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat_hparams(v, f"{prefix}{k}."))
        elif isinstance(v, int | float | str | bool):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)
