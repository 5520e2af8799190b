"""An export that fails keeps the trained weights: written where they fit, and a message that says where.

    out = export_or_keep_checkpoint(lambda: export_trained(...), accelerator, cfg.train, output_dir, summary)

Without periodic checkpoints (the default ``train.checkpoint_every: 0``) the weights exist only in memory after
training; a full disk, a Ctrl-C (SIGINT / SIGTERM / SIGHUP raise at once during the export) or any other error while
exporting would lose the run. On failure the weights of :func:`mmalign.training.loop.train`'s last run are written by
:mod:`mmalign.training.keep_weights` (the final step's checkpoint; when that does not fit, the trainable weights alone, in the
output folder or on another filesystem) and :class:`ExportFailedError` (a full disk: ``DiskFullError``; a signal:
``TrainingInterrupted``, exit 130) names them and the ``mmalign export`` command that finishes the job.
Single-process runs write the checkpoint (a checkpoint write is collective); in a distributed run the main process
writes the trainable weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from mmalign import checkpoint as ckpt
from mmalign.training import keep_weights
from mmalign.training.keep_weights import (  # raised where the weights are kept
    ExportDiskFullError,
    ExportFailedError,
)

__all__ = ["ExportDiskFullError", "ExportFailedError", "export_or_keep_checkpoint"]

T = TypeVar("T")


def export_or_keep_checkpoint(export: Callable[[], T], accelerator: Any, train_cfg: Any,
                              output_dir: str | os.PathLike, summary: dict[str, Any]) -> T:
    kept = keep_weights.pending()
    if kept is None:  # not after train() in this process: the weights of the summary's step, from this model-less call
        kept = _from_summary(accelerator, train_cfg, output_dir, summary)
    with kept.during("the export"):
        out = export()
    keep_weights.forget()  # exported: nothing left only in memory
    return out


def _from_summary(accelerator: Any, train_cfg: Any, output_dir: str | os.PathLike,
                  summary: dict[str, Any]) -> keep_weights.KeptWeights:
    from pathlib import Path

    state = ckpt.LoopState.from_dict(summary["trainer_state"], source="summary trainer_state")
    return keep_weights.KeptWeights(accelerator, train_cfg, Path(output_dir), state, model=None)
