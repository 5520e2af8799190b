"""Atomic training checkpoints: ``<output_dir>/checkpoints/checkpoint-<step>``.

A checkpoint is written into a hidden temporary folder and renamed into place only when complete, so a
kill during a write never leaves a broken latest checkpoint (``os.replace`` of a directory is atomic on
POSIX filesystems). Older checkpoints beyond ``keep`` are deleted after the new one is in place.

Contents (written by :meth:`accelerate.Accelerator.save_state` plus our hooks):
``trainable.safetensors`` (only parameters with ``requires_grad``: LoRA checkpoints stay small),
optimizer / scheduler / RNG states, ``trainer_state.json``: the loop's counters, :class:`LoopState` (the one
schema of that file, written by :func:`save_loop_state` and read back by :func:`load_loop_state`), and
``run_config.json``: the recipe config of the run that wrote it (what :mod:`mmalign.resume_check` compares a resumed
config with before any model loads).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from mmalign.config_error import ConfigError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"
RUN_CONFIG_FILE = "run_config.json"


def checkpoints_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are ignored)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = CHECKPOINT_RE.match(child.name)
        if m and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def resolve_resume(resume: str | None, output_dir: str | os.PathLike) -> Path | None:
    """``None``/"" → no resume; ``"latest"`` → newest complete checkpoint (or none); else a path."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        hint = f"; its newest is {latest_checkpoint(path)}" if latest_checkpoint(path) else ""
        raise ConfigError(f"train.resume: {path} is not a complete checkpoint (no {STATE_FILE}){hint}")
    return path


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    save_file(trainable_state_dict(model), str(Path(folder) / TRAINABLE_FILE))


def check_trainable_file(folder: str | os.PathLike) -> None:
    """``ConfigError`` naming ``<folder>/trainable.safetensors`` when it is not a safetensors file (reads the header
    only; a missing file is not checked here: sharded checkpoints have none)."""
    path = Path(folder) / TRAINABLE_FILE
    if path.is_file():
        check_safetensors_file(path, "the checkpoint is damaged: use another checkpoint")


def check_safetensors_file(path: str | os.PathLike, advice: str = "the file is damaged") -> None:
    """``ConfigError`` naming ``path`` when its header is not a safetensors header (nothing but the header is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception as exc:  # SafetensorError (header too large / invalid) or OSError: the file is not usable
        raise ConfigError(f"{path} is not a safetensors file ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                          f"{advice}") from None


def load_trainable(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load the trainable parameters saved by :func:`save_trainable`; every one must be present, in its shape."""
    check_trainable_file(folder)
    state = load_file(str(Path(folder) / TRAINABLE_FILE))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {folder} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    wrong = [(n, tuple(v.shape), tuple(params[n].shape)) for n, v in state.items() if v.shape != params[n].shape]
    if wrong:
        name, saved, now = wrong[0]
        raise RuntimeError(f"checkpoint {folder} does not match the model: {name} has shape {saved} in the "
                           f"checkpoint and {now} in the model ({len(wrong)} parameters differ; a different LoRA "
                           "rank or model?)")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))


def write_state(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    with open(Path(folder) / STATE_FILE, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2)


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    with open(Path(folder) / STATE_FILE, encoding="utf-8") as fh:
        return json.load(fh)


@dataclass
class LoopState:
    """The training loop's counters: what ``trainer_state.json`` holds and what a resume restores.

    The data position is ``micro_batches``: the epoch and the offset into it follow from it and the loader length
    (:meth:`position`), as the data order is a function of ``(seed, epoch)``. ``micro_per_epoch`` / ``world_size``
    record the data layout the counters were taken under (``None`` in checkpoints written before they were stored).
    """

    step: int = 0
    """Optimizer steps done (including skipped non-finite ones)."""
    micro_batches: int = 0
    """Micro-batches consumed since the start of training (over all epochs)."""
    nonfinite_run: int = 0
    """Consecutive optimizer steps skipped for a NaN/inf loss or gradient, up to this step."""
    skipped_steps: int = 0
    """All optimizer steps skipped for a NaN/inf loss or gradient."""
    loss_scale_skips: int = 0
    """fp16 steps whose update the GradScaler skipped (a loss-scale overflow)."""
    micro_per_epoch: int | None = None
    """Micro-batches per epoch (per process) when the counters were taken."""
    world_size: int | None = None
    """Number of processes when the counters were taken."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("step", "micro_batches")

    def position(self) -> tuple[int, int]:
        """``(epoch, micro-batches already consumed in it)``."""
        if not self.micro_per_epoch:
            raise ValueError("LoopState.position needs micro_per_epoch")
        return divmod(self.micro_batches, self.micro_per_epoch)

    def layout_changes(self, now: LoopState) -> dict[str, tuple[int, int]]:
        """``{field: (saved, now)}`` for the layout fields that differ (unknown saved values never differ)."""
        return {k: (getattr(self, k), getattr(now, k)) for k in ("micro_per_epoch", "world_size")
                if getattr(self, k) is not None and getattr(self, k) != getattr(now, k)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "trainer state") -> LoopState:
        """Counters from ``data``; keys it lacks (older checkpoints) take their defaults, unknown keys are ignored."""
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{source}: not a trainer state (no {', '.join(missing)})")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def save_loop_state(folder: str | os.PathLike, state: LoopState) -> None:
    write_state(folder, state.to_dict())


def load_loop_state(folder: str | os.PathLike) -> LoopState:
    return LoopState.from_dict(read_state(folder), source=str(Path(folder) / STATE_FILE))


def save_run_config(folder: str | os.PathLike, run_config: dict[str, Any]) -> None:
    """``run_config.json``: the recipe config of the run (read back by :mod:`mmalign.resume_check`)."""
    with open(Path(folder) / RUN_CONFIG_FILE, "w", encoding="utf-8") as fh:
        json.dump(run_config, fh, indent=2, default=str)


def temp_path(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoints_dir(output_dir) / f".tmp-checkpoint-{step}"


def final_path(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoints_dir(output_dir) / f"checkpoint-{step}"


def commit(output_dir: str | os.PathLike, step: int, keep: int) -> Path:
    """Rename the finished temporary folder into place, then prune to the newest ``keep``."""
    tmp, final = temp_path(output_dir, step), final_path(output_dir, step)
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            _remove(old)
    return final


def _remove(checkpoint: Path) -> None:
    """Rename out of the ``checkpoint-*`` namespace first, then delete: a kill during the (non-atomic)
    delete leaves a temporary folder that :func:`clean_temporaries` removes, never a partial checkpoint
    that :func:`list_checkpoints` would take for a complete one."""
    trash = checkpoint.with_name(f".tmp-{checkpoint.name}-deleting")
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(checkpoint, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_temporaries(output_dir: str | os.PathLike) -> None:
    """Remove half-written checkpoints left by a killed run."""
    root = checkpoints_dir(output_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".tmp-checkpoint-"):
                shutil.rmtree(child, ignore_errors=True)


RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def rng_state_problem(folder: str | os.PathLike, process_index: int = 0) -> str | None:
    """Why ``random_states_<i>.pkl`` of a checkpoint cannot restore this process's RNGs, or ``None``.

    accelerate's ``load_state`` swallows a missing or unreadable file (an info-level log line) and the resumed run
    continues with different randomness; checking it first lets ``train.resume`` refuse such a checkpoint.
    """
    from accelerate.utils import load

    path = Path(folder) / f"random_states_{process_index}.pkl"
    if not path.is_file():
        return f"{path} is missing"
    try:
        states = load(path)
    except Exception as exc:  # truncated / corrupt pickle: any error means "cannot restore"
        return f"{path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    missing = [k for k in RNG_KEYS if not isinstance(states, dict) or k not in states]
    if torch.cuda.is_available() and isinstance(states, dict) and "torch_cuda_manual_seed" not in states:
        missing.append("torch_cuda_manual_seed")
    return f"{path} lacks {', '.join(missing)}" if missing else None
