"""A kill during a checkpoint write leaves the previous checkpoint loadable (issue 2, item 4)."""

from __future__ import annotations

import json
import os
import signal
import sys

import torch
from safetensors.torch import load_file

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.loop import train

RUN = dict(max_steps=6, batch_size=2, grad_accum=2, lr=0.05, checkpoint_every=2, keep_checkpoints=3, seed=5,
           progress_bar=False)


def test_sigkill_while_writing_checkpoint_keeps_previous_and_resume_finishes(run_group, tiny, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "MMALIGN_TEST_KILL_AT_CHECKPOINT": "4", "OMP_NUM_THREADS": "1"}
    proc = run_group([sys.executable, str(tiny.__file__), str(out), json.dumps(RUN), "--noise"], env, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    # The kill left a half-written temporary folder; the complete checkpoints are 2 only.
    half = ckpt.temp_path(out, 4)
    assert (half / ckpt.TRAINABLE_FILE).is_file() and not (half / ckpt.STATE_FILE).exists()
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-2"]
    assert ckpt.resolve_resume("latest", out) == ckpt.final_path(out, 2)
    # The previous checkpoint is complete and loadable.
    model = tiny.make_model(seed=1)
    ckpt.load_trainable(model, ckpt.final_path(out, 2))
    assert ckpt.read_state(ckpt.final_path(out, 2))["step"] == 2
    assert not (out / "summary.json").exists()

    # resume: latest picks checkpoint-2, finishes the run and cleans the temporary folder.
    resumed_model = tiny.make_model(seed=1)
    summary = train(TrainConfig(**RUN, resume="latest"), output_dir=out, model=resumed_model,
                    dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))
    assert summary["steps"] == 6 and [h["step"] for h in summary["history"]] == [3, 4, 5, 6]
    assert not half.exists() and not any(p.name.startswith(".tmp") for p in ckpt.checkpoints_dir(out).iterdir())
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]

    # ... and ends where an uninterrupted run ends.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    straight_model = tiny.make_model()
    train(TrainConfig(**RUN), output_dir=tmp_path / "straight", model=straight_model,
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))
    a, b = tiny.weights(straight_model), tiny.weights(resumed_model)
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert max_diff <= 1e-6, max_diff
    saved = load_file(str(ckpt.final_path(out, 6) / ckpt.TRAINABLE_FILE))
    for k, v in saved.items():
        torch.testing.assert_close(v, a[k], rtol=0, atol=1e-6)


def test_commit_replaces_and_prunes_without_exposing_partial_checkpoints(tmp_path):
    """``commit`` never leaves a complete-looking but partial ``checkpoint-*`` folder behind."""
    for step in (1, 2, 3):
        tmp = ckpt.temp_path(tmp_path, step)
        tmp.mkdir(parents=True)
        ckpt.write_state(tmp, {"step": step})
        ckpt.commit(tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    # Re-writing an existing step replaces it.
    tmp = ckpt.temp_path(tmp_path, 3)
    tmp.mkdir(parents=True)
    ckpt.write_state(tmp, {"step": 3, "again": True})
    ckpt.commit(tmp_path, 3, keep=2)
    assert ckpt.read_state(ckpt.final_path(tmp_path, 3)) == {"step": 3, "again": True}
    assert sorted(p.name for p in ckpt.checkpoints_dir(tmp_path).iterdir()) == ["checkpoint-2", "checkpoint-3"]
