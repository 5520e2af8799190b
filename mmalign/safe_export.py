"""An export that fails keeps the trained weights: a checkpoint to re-export from, and a message that says so.

    out = export_or_keep_checkpoint(lambda: export_trained(...), accelerator, cfg.train, output_dir, summary)

Without periodic checkpoints (the default ``train.checkpoint_every: 0``) the weights exist only in memory after
training; a full disk or any other error while exporting would lose the run. On failure the final step's
checkpoint is written (unless it exists) and :class:`ExportFailedError` names it and the ``mmalign export``
command that finishes the job. Single-process runs only write it here (a checkpoint write is collective); a
distributed recipe's non-main ranks have already moved on, so there the error only names the latest checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mmalign import checkpoint as ckpt

T = TypeVar("T")


class ExportFailedError(RuntimeError):
    """Exporting the trained model failed; the message names the checkpoint that keeps the weights."""


def export_or_keep_checkpoint(export: Callable[[], T], accelerator: Any, train_cfg: Any,
                              output_dir: str | os.PathLike, summary: dict[str, Any]) -> T:
    from mmalign.train import save_final_checkpoint

    try:
        return export()
    except Exception as exc:
        if accelerator.num_processes == 1:
            kept: Path | None = save_final_checkpoint(accelerator, train_cfg, output_dir, summary)
        else:
            kept = ckpt.latest_checkpoint(output_dir)
        reason = f"{type(exc).__name__}: {exc}"
        if kept is None:
            raise ExportFailedError(f"export to {output_dir} failed ({reason}); no checkpoint holds the weights") from exc
        raise ExportFailedError(
            f"export to {output_dir} failed ({reason}); the trained weights are kept in checkpoint {kept}; "
            f"re-export with `mmalign export {kept} --out {output_dir}` (diffusion), or run the same command with "
            "train.resume=latest (it resumes at the last step and exports)"
        ) from exc
