"""The trained weights survive a Ctrl-C at any phase after the loop and a full disk at any write.

Decision: the weights stay in memory (a run that goes well writes nothing extra) and are written when something
stops the run, in decreasing size until one write succeeds:

1. the checkpoint of the current step (``checkpoints/checkpoint-<N>``: weights, optimizer, RNG; resumable exactly,
   ``train.resume=latest``); single-process runs only (a checkpoint write is collective);
2. the trainable weights alone (``checkpoints/weights-<N>/trainable.safetensors`` + ``trainer_state.json``: the
   LoRA's size, no optimizer state), in the output folder;
3. the same on another filesystem when the output folder's disk is full: ``$MMALIGN_RESCUE_DIR``, the temporary
   folder, the home folder (the first with room), with the run's ``mmalign_config.yaml`` copied beside them so
   ``mmalign export <folder>`` finds the base model.

The message names what was written and where, and how to export or resume from it. What triggers a write:

* a full disk anywhere in :func:`mmalign.training.loop.train` (the TensorBoard flush of a log step, a periodic checkpoint,
  a validation grid, ``summary.json``) or in the export;
* a stop signal (SIGINT, SIGTERM, SIGHUP) after the loop: during the final validation grid and the export the
  handlers raise at once (:class:`~mmalign.interrupt.RaiseOnStop`), and the write itself defers further signals;
* any other error after the loop (the weights are written, the error keeps its traceback with a note saying where).

:func:`mmalign.training.loop.train` registers the weights of the run it finished (:func:`pending`); the export
(:func:`mmalign.safe_export.export_or_keep_checkpoint`) and the recipes' entry point
(:func:`mmalign.recipe_entry.run_recipe`, for an interrupt between the two) use it; a finished export forgets it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign import checkpoint as ckpt
from mmalign import disk_errors
from mmalign.interrupt import RaiseOnStop, StopAfterTraining, StopRequest, TrainingInterrupted, say

RESCUE_ENV = "MMALIGN_RESCUE_DIR"
RUN_CONFIG = "mmalign_config.yaml"
_pending: KeptWeights | None = None


class ExportFailedError(RuntimeError):
    """Exporting the trained model failed; the message names the checkpoint that keeps the weights."""


class ExportDiskFullError(disk_errors.DiskFullError, ExportFailedError):
    """The disk filled up during the export (both a full disk and a failed export)."""


def pending() -> KeptWeights | None:
    """The trained weights of the last finished :func:`mmalign.training.loop.train` not yet exported, if any."""
    return _pending


def forget() -> None:
    global _pending
    _pending = None


@dataclass
class KeptWeights:
    """What is needed to write the trained weights of a run that is still in memory."""

    accelerator: Any
    train_cfg: Any
    output_dir: Path
    state: ckpt.LoopState
    model: Any
    """The unwrapped model (its ``requires_grad`` parameters are the trained weights)."""
    written: Path | None = field(default=None)

    def __post_init__(self) -> None:
        forget()  # a new run: the weights of an earlier one in this process (a curriculum stage) are not its own

    def register(self) -> None:
        """Make these the weights that the export and the recipe entry point keep (:func:`pending`)."""
        global _pending
        _pending = self

    @contextmanager
    def during(self, phase: str, *, signals: bool = True, any_error: bool = True) -> Iterator[None]:
        """Write the weights when the block fails: on a full disk always; on a stop signal (raised at once when
        ``signals``) and on any other error when ``any_error``. A training interrupt that already wrote its
        checkpoint, and a second Ctrl-C ("stop at once"), pass through."""
        try:
            with _quiet_disk_full_threads(), RaiseOnStop() if signals else nullcontext():
                yield
        except (TrainingInterrupted, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if any_error or disk_errors.is_disk_full(exc, self.output_dir):
                raise self.failure(exc, phase) from exc
            raise

    def failure(self, exc: BaseException, phase: str) -> BaseException:
        """Write the weights (unless done) and return the exception to raise for ``exc``."""
        if isinstance(exc, TrainingInterrupted):
            return exc
        kept = self.save(exc)
        step, total = self.state.step, self.train_cfg.max_steps
        if isinstance(exc, StopAfterTraining):
            message = f"stopped by {exc.signal_name} during {phase} (after step {step}/{total}); {kept}"
            if self.accelerator.is_main_process:
                print(message, file=sys.stderr, flush=True)
            return TrainingInterrupted(message, self.written)
        if disk_errors.is_disk_full(exc, self.output_dir):
            what = getattr(exc, "path", None) or getattr(exc, "filename", None)
            if what is None and _raised_in(exc, "tensorboard"):
                what = f"the TensorBoard logs ({self.output_dir / 'logs'})"
            where = f"while writing {what}" if what else f"({type(exc).__name__}: {_first_line(exc)})"
            error_class = ExportDiskFullError if phase == "the export" else disk_errors.DiskFullError
            error = error_class(28, f"{disk_errors.reason(exc)} {where} during {phase}; {kept}")
            error.path = what
            return error
        if phase == "the export":
            return ExportFailedError(f"export to {self.output_dir} failed ({type(exc).__name__}: "
                                     f"{_first_line(exc)}); {kept}")
        exc.add_note(f"mmalign: {kept}")
        return exc

    def save(self, cause: BaseException | None = None) -> str:
        """Write the weights (the largest form that fits, see the module docstring); return where, in words."""
        if self.written is not None:
            return self._describe(self.written)
        with StopRequest():  # a signal now waits for the write to end (a second one after 2 s aborts it)
            tried: list[str] = []
            if self.accelerator.num_processes == 1:
                final = ckpt.final_path(self.output_dir, self.state.step)
                if (final / ckpt.STATE_FILE).is_file():
                    self.written = final
                    return self._describe(final)
                try:
                    from mmalign.training.checkpointing import save_final_checkpoint

                    save_final_checkpoint(self.accelerator, self.train_cfg, self.output_dir,
                                          {"steps": self.state.step, "trainer_state": self.state.to_dict()})
                    self.written = final
                    return self._describe(final)
                except Exception as exc:
                    tried.append(f"checkpoint {final}: {_first_line(exc)}")
            if not self.accelerator.is_main_process:
                return "the main process writes the trained weights"
            for folder in self._weights_folders():
                try:
                    self.written = self._write_weights(folder)
                    return self._describe(self.written, tried)
                except Exception as exc:
                    tried.append(f"{folder}: {_first_line(exc)}")
        return ("the trained weights could not be written anywhere (tried " + "; ".join(tried) + "): free some disk "
                f"space, or set {RESCUE_ENV} to a folder with room, and run again")

    def _weights_folders(self) -> list[Path]:
        name = f"weights-{self.state.step}"
        here = ckpt.checkpoints_dir(self.output_dir) / name
        elsewhere = [os.environ.get(RESCUE_ENV), tempfile.gettempdir(), str(Path.home())]
        run = self.output_dir.resolve().name or "run"
        folders = [here]
        for base in elsewhere:
            if base:
                folder = Path(base) / "mmalign-rescued" / f"{run}-{os.getpid()}" / name
                if folder not in folders:
                    folders.append(folder)
        return folders

    def _write_weights(self, folder: Path) -> Path:
        if self.model is None:
            raise RuntimeError("the model is not known here")
        tmp = folder.with_name(f".tmp-{folder.name}")
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            ckpt.save_trainable(self.model, tmp)
            ckpt.save_loop_state(tmp, self.state)
            config = self.output_dir / RUN_CONFIG
            if config.is_file() and folder.parent != ckpt.checkpoints_dir(self.output_dir):
                shutil.copyfile(config, tmp / RUN_CONFIG)  # elsewhere: `mmalign export <folder>` finds the base
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    def _describe(self, where: Path, tried: list[str] | None = None) -> str:
        step, total = self.state.step, self.train_cfg.max_steps
        if where.name.startswith("checkpoint-"):
            then = ("run the same command with train.resume=latest (it resumes at the last step and exports)"
                    if step >= total else "resume with train.resume=latest (the same command)")
            return (f"the trained weights of step {step}/{total} are kept in checkpoint {where}; re-export with "
                    f"`mmalign export {where} --out {self.output_dir}` (diffusion), or {then}")
        why = f" (a full checkpoint was not written: {tried[0]})" if tried else ""
        return (f"the trained weights of step {step}/{total} are kept in {where / ckpt.TRAINABLE_FILE} (weights only, "
                f"no optimizer state{why}); export with `mmalign export {where} --out <dir>` (diffusion), or load "
                "them with mmalign.checkpoint.load_trainable")


@contextmanager
def _quiet_disk_full_threads() -> Iterator[None]:
    """A writer thread (TensorBoard's) that dies of a full disk prints one line, not a traceback: the main thread's
    next write fails the same way and says what is kept."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and disk_errors.is_disk_full(args.exc_value, "."):
            name = args.thread.name if args.thread is not None else "a thread"
            say(f"{name}: {_first_line(args.exc_value)}\n")
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def _raised_in(exc: BaseException, package: str) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}{package}{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, disk_errors.DiskFullError):
        return "no space left on device"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
