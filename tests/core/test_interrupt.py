"""Ctrl-C / SIGTERM during training: the current optimizer step finishes, a checkpoint is written, the process says
where and how to resume and exits 130; resuming from it equals the uninterrupted run (issue 18)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.loop import train

# checkpoint_every=0 (the default): before, an interrupt lost every step of the run.
RUN = dict(max_steps=12, batch_size=2, grad_accum=2, lr=0.05, seed=5, progress_bar=False)


def _interrupt(tiny, out, sig: int, after_micro: int = 7) -> tuple[int, str]:
    """Start a real training process with the default SIGINT handler (background jobs inherit SIGINT ignored),
    wait until it runs micro-batch ``after_micro``, send ``sig``; return (exit code, all output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(tiny.__file__), str(out), json.dumps(RUN), "--noise", "--announce"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)],
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == f"micro {after_micro}":
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, "".join(lines) + rest


def test_sigint_saves_a_checkpoint_and_resume_equals_the_uninterrupted_run(tiny, tmp_path):
    out = tmp_path / "run"
    code, output = _interrupt(tiny, out, signal.SIGINT)
    assert code == 130, output[-3000:]
    assert "Traceback" not in output
    found = re.search(r"training stopped by SIGINT after step (\d+)/12; checkpoint: (\S+)", output)
    assert found, output[-3000:]
    step = int(found.group(1))
    assert 3 <= step < 12  # micro-batch 7 is in optimizer step 4: that step finished, none after it ran
    assert found.group(2) == str(ckpt.final_path(out, step))
    assert "train.resume=latest" in output
    assert [p.name for p in ckpt.list_checkpoints(out)] == [f"checkpoint-{step}"]
    assert not (out / "summary.json").exists()

    resumed = tiny.make_model(seed=1)
    summary = train(TrainConfig(**RUN, resume="latest"), output_dir=out, model=resumed,
                    dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))
    assert summary["history"][0]["step"] == step + 1 and summary["steps"] == 12

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    straight = tiny.make_model()
    train(TrainConfig(**RUN), output_dir=tmp_path / "straight", model=straight, dataset=tiny.TinyRegression(),
          step_fn=tiny.make_step_fn(noise=True))
    a, b = tiny.weights(straight), tiny.weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_sighup_behaves_as_sigterm(tiny, tmp_path):
    """A closed terminal or a dropped ssh session (SIGHUP) killed the run with nothing saved (issue 28)."""
    out = tmp_path / "run"
    code, output = _interrupt(tiny, out, signal.SIGHUP)
    assert code == 130, output[-3000:]
    found = re.search(r"training stopped by SIGHUP after step (\d+)/12; checkpoint: (\S+)", output)
    assert found and "Traceback" not in output, output[-3000:]
    step = int(found.group(1))
    assert [p.name for p in ckpt.list_checkpoints(out)] == [f"checkpoint-{step}"]
    assert ckpt.read_state(ckpt.final_path(out, step))["step"] == step


def test_sigterm_checkpoints_and_raises_training_interrupted(tiny, tmp_path):
    """In-process: the step function sends this very process a real SIGTERM during micro-batch 3 (optimizer step 2)."""
    from mmalign.interrupt import TrainingInterrupted

    base = tiny.make_step_fn()

    def step_fn(model, batch):
        if base.calls["n"] == 2:  # this call is micro-batch 3
            os.kill(os.getpid(), signal.SIGTERM)
        return base(model, batch)

    with pytest.raises(TrainingInterrupted) as info:
        train(TrainConfig(**RUN), output_dir=tmp_path, model=tiny.make_model(), dataset=tiny.TinyRegression(),
              step_fn=step_fn)
    assert info.value.code == 130 and info.value.checkpoint == ckpt.final_path(tmp_path, 2)
    assert "training stopped by SIGTERM after step 2/12" in str(info.value)
    assert base.calls["n"] == 4  # micro-batch 4 finished optimizer step 2; nothing ran after it
    assert ckpt.read_state(ckpt.final_path(tmp_path, 2))["micro_batches"] == 4


def test_handlers_are_restored_after_training(tiny, tmp_path):
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    train(TrainConfig(max_steps=1, batch_size=2, progress_bar=False), output_dir=tmp_path, model=tiny.make_model(),
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
@pytest.mark.parametrize("ignored", [True, False])
def test_an_inherited_ignored_sigint_or_sighup_stays_ignored(ignored, sig):
    from mmalign.interrupt import StopRequest

    previous = signal.signal(sig, signal.SIG_IGN if ignored else signal.default_int_handler)
    try:
        with StopRequest():  # nohup ignores SIGHUP, background jobs SIGINT: the user asked for that
            assert (signal.getsignal(sig) == signal.SIG_IGN) == ignored
    finally:
        signal.signal(sig, previous)
