"""The ``__main__`` of every recipe: bad input is one line on stderr and exit code 2, never a traceback.

    if __name__ == "__main__":
        raise SystemExit(run_recipe(main))

:class:`~mmalign.config.ConfigError` (a bad key or value), :class:`~mmalign.data.errors.DataFormatError` (a bad
data file, naming file/row/field) and :class:`~mmalign.run_lock.RunFolderLockedError` (another run holds the
output folder) exit with 2. An interrupted run (Ctrl-C / SIGTERM, :class:`~mmalign.interrupt.TrainingInterrupted`)
has already said where its checkpoint is and exits with 130. Faults whose message already says what happened and
what is left (a full disk, a failed export that kept a checkpoint, too many bad samples, a run of NaN losses) are
one line too, with exit code 1. Everything else is a bug and keeps its traceback.

:func:`run_recipe_file` runs a recipe file's ``main`` inside the current process instead (tests, notebooks), with
accelerate's process-wide state reset around it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BAD_INPUT_EXIT = 2
FAULT_EXIT = 1


def bad_input_errors() -> tuple[type[BaseException], ...]:
    from mmalign.config import ConfigError
    from mmalign.data.errors import DataFormatError
    from mmalign.run_lock import RunFolderLockedError

    return ConfigError, DataFormatError, RunFolderLockedError


def explained_faults() -> tuple[type[BaseException], ...]:
    from mmalign.data.errors import TooManyBadSamplesError
    from mmalign.disk_errors import DiskFullError
    from mmalign.safe_export import ExportFailedError
    from mmalign.training.loop import NonFiniteLossError

    return DiskFullError, ExportFailedError, TooManyBadSamplesError, NonFiniteLossError


def run_recipe(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` (default ``sys.argv[1:]``), then end the process group; return the exit code."""
    from mmalign.interrupt import StopAfterTraining
    from mmalign.training import keep_weights
    from mmalign.training.distributed import finish_distributed

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            main(argv)
        except (KeyboardInterrupt, StopAfterTraining) as exc:  # between the loop and the export (keep_weights)
            if (kept := keep_weights.pending()) is None:
                raise
            raise kept.failure(StopAfterTraining(getattr(exc, "signal_name", "SIGINT")), "the recipe's last steps"
                               ) from exc
    except bad_input_errors() as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT
    except explained_faults() as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return FAULT_EXIT
    finish_distributed()
    return 0


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide singletons (``AcceleratorState``, ``GradientState``, ``PartialState``).

    An ``Accelerator`` asking for other settings than the first one in the process (another mixed precision)
    raises otherwise, and a later run would inherit the gradient-accumulation state of an earlier one."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def run_recipe_file(recipe: str | os.PathLike, argv: list[str]) -> Any:
    """``main(argv)`` of a recipe file (``recipes/diffusion.py``, ...) in this process; return what it returns
    (the summary). Accelerate's process-wide state is reset before and after, so runs with different settings
    follow each other; exceptions propagate (no exit codes: that is :func:`run_recipe`)."""
    import runpy

    from mmalign.training import keep_weights

    main = runpy.run_path(str(recipe))["main"]
    reset_accelerate_state()
    try:
        return main(argv)
    finally:
        keep_weights.forget()  # the run is over: do not hold its model
        reset_accelerate_state()
