"""The ``train:`` block of every recipe config (:class:`TrainConfig`) and its value checks.

A module of its own that imports no heavy library (no torch, transformers, accelerate), so the config schemas
(:mod:`mmalign.mllm.vlm.config`, :mod:`mmalign.mllm.video.config`, :mod:`mmalign.diffusion.config`) load in a
fraction of a second: ``mmalign <command> --help`` and config errors come before any model import.
The loop that runs on it is :mod:`mmalign.training`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from mmalign.validate import OneOf, Range, register

OPTIMIZER_EXTRAS: dict[str, tuple[str, str] | None] = {
    "adamw": None, "adamw_fused": None, "adamw_8bit": ("bitsandbytes", "bnb"), "adafactor": None}
"""Optimizer name → (module, mmalign extra) it needs, or None."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (the ``train:`` block of every recipe config)."""

    max_steps: int = 100
    """Optimizer steps to run (each is ``grad_accum`` micro-batches)."""
    batch_size: int = 1
    """Per-device micro-batch size (pairs for pairwise methods)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 1e-5
    """Peak learning rate."""
    lr_scheduler: str = "constant_with_warmup"
    """constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial | inverse_sqrt."""
    warmup_steps: int = 0
    optimizer: str = "adamw"
    """adamw | adamw_fused (CUDA) | adamw_8bit (bitsandbytes) | adafactor."""
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (<= 0 disables)."""
    mixed_precision: str = "no"
    """no | fp16 | bf16 (accelerate autocast)."""
    autocast: bool = True
    """Run forwards under accelerate's autocast when mixed precision is on. A speed-up only: every path casts its
    inputs explicitly, so false (as DeepSpeed runs fp16/bf16, and as fp16 on CPU runs) gives the same program."""
    seed: int = 0
    num_workers: int = 0
    """DataLoader worker processes."""
    log_every: int = 1
    """Console/TensorBoard logging interval in optimizer steps."""
    checkpoint_every: int = 0
    """Write a checkpoint every N optimizer steps (0: only at the end if ``checkpoint_at_end``)."""
    checkpoint_at_end: bool = False
    keep_checkpoints: int = 2
    """Keep the newest K checkpoints (0 keeps all)."""
    resume: str | None = None
    """``latest`` (newest complete checkpoint in output_dir, if any) or a checkpoint folder."""
    resume_require_rng_state: bool = True
    """Refuse to resume from a checkpoint whose RNG state file is missing or unreadable (false: resume anyway; the
    run's randomness then differs from an uninterrupted run's)."""
    max_nonfinite_steps: int = 5
    """Skip optimizer steps whose loss or gradient norm is NaN/inf; stop after this many in a row."""
    progress_bar: bool = True

    def __post_init__(self) -> None:
        # YAML 1.1 / OmegaConf read a bare `no` as the boolean False, which a str field stores as "False".
        if str(self.mixed_precision).lower() in ("false", "none", "0"):
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"train.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        extra = OPTIMIZER_EXTRAS.get(self.optimizer)  # an unknown name: the range check names the choices
        if extra and importlib.util.find_spec(extra[0]) is None:  # before any model loads, not at the first step
            raise ValueError(f"train.optimizer={self.optimizer} needs the optional extra: pip install 'mmalign[{extra[1]}]'")


LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                 "inverse_sqrt")
"""transformers schedules that need no options beyond warmup and total steps."""
OPTIMIZERS = tuple(OPTIMIZER_EXTRAS)
register(
    TrainConfig, max_steps=Range(1), batch_size=Range(1), grad_accum=Range(1), lr=Range(0, low_open=True),
    lr_scheduler=OneOf(*LR_SCHEDULERS), warmup_steps=Range(0), optimizer=OneOf(*OPTIMIZERS), weight_decay=Range(0),
    adam_beta1=Range(0, 1, high_open=True), adam_beta2=Range(0, 1, high_open=True), adam_eps=Range(0, low_open=True),
    mixed_precision=OneOf("no", "fp16", "bf16"), seed=Range(0, 2**32 - 1), num_workers=Range(0), log_every=Range(1),
    checkpoint_every=Range(0), keep_checkpoints=Range(0), max_nonfinite_steps=Range(1),
)
