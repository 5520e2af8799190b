"""Ctrl-C / SIGTERM / SIGHUP during training: finish the current optimizer step, write a checkpoint, say how to resume.

:class:`StopRequest` installs handlers for SIGINT, SIGTERM and SIGHUP (a closed terminal, a dropped ssh session:
the same request as SIGTERM) while the training loop runs. The first signal only
sets a flag; the loop reads it once per optimizer step (in the same collective as its NaN check, so every process
stops at the same step), writes a checkpoint and raises :class:`TrainingInterrupted`, an exit with code 130 and no
traceback. A second signal more than :data:`REPEAT_GRACE_S` seconds after the first raises ``KeyboardInterrupt`` at
once (a user who presses Ctrl-C twice means it); one arriving sooner is taken for the same request forwarded by a
launcher (torchrun sends SIGTERM to its workers right after the terminal's SIGINT). A SIGINT or SIGHUP that the
process inherited as ignored (background jobs, ``nohup``) stays ignored.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType, TracebackType
from typing import Any

INTERRUPTED_EXIT = 130
REPEAT_GRACE_S = 2.0


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after writing a checkpoint; ``checkpoint`` is its folder."""

    def __init__(self, message: str, checkpoint: Any = None) -> None:
        super().__init__(INTERRUPTED_EXIT)
        self.message, self.checkpoint = message, checkpoint

    def __str__(self) -> str:
        return self.message


class _SignalScope:
    """Installs ``self._handle`` for SIGINT / SIGTERM / SIGHUP on enter (main thread only; an inherited ignored
    SIGINT or SIGHUP stays ignored) and puts the previous handlers back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
    KEEP_IGNORED = (signal.SIGINT, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in self.SIGNALS:
            previous = signal.getsignal(sig)
            if sig in self.KEEP_IGNORED and previous == signal.SIG_IGN:
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError


class StopRequest(_SignalScope):
    """Context manager: ``with StopRequest() as stop: ... if stop.signal_name: ...``."""

    def __init__(self) -> None:
        super().__init__()
        self.signal_name: str | None = None
        self._first_at = 0.0

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signal_name is None:
            self.signal_name, self._first_at = signal.Signals(signum).name, now
            # os.write, not print: a handler that prints while the interrupted code prints raises "reentrant call".
            say(f"\n{self.signal_name} received: finishing the current optimizer step, then writing a "
                "checkpoint (press Ctrl-C again to stop at once, without saving)\n")
        elif now - self._first_at > REPEAT_GRACE_S:
            raise KeyboardInterrupt


def say(text: str) -> None:
    """Write to stderr from a signal handler; a terminal that is gone (SIGHUP: EIO, a closed pipe) is not an error."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


class StopAfterTraining(BaseException):
    """A stop signal after the training loop (final validation, export): raised at once where the program is, so
    that :mod:`mmalign.training.keep_weights` writes the trained weights. A ``BaseException``, as ``KeyboardInterrupt``: an
    ``except Exception`` on the way does not swallow it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class RaiseOnStop(_SignalScope):
    """Context manager: SIGINT / SIGTERM / SIGHUP raise :class:`StopAfterTraining` in the main thread (an inherited
    ignored SIGINT or SIGHUP stays ignored); the previous handlers come back on exit."""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        say(f"\n{name} received: writing the trained weights, then stopping\n")
        raise StopAfterTraining(name)
