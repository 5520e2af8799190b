"""The loop's counters have one schema, :class:`mmalign.checkpoint.LoopState`: what ``trainer_state.json`` holds,
what a resume restores and what ``summary["trainer_state"]`` reports; checkpoints written before some counters
were stored still resume."""

from __future__ import annotations

import json

import pytest

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.loop import train

ON_DISK_KEYS = {"step", "micro_batches", "nonfinite_run", "skipped_steps", "loss_scale_skips", "micro_per_epoch",
                "world_size"}
"""The keys of trainer_state.json: changing them changes the checkpoint format (old checkpoints must still load)."""


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=6, batch_size=2, grad_accum=2, lr=0.05, seed=1, progress_bar=False, checkpoint_every=3,
                keep_checkpoints=0)
    return TrainConfig(**{**base, **kw})


def test_round_trip_and_on_disk_keys(tmp_path):
    state = ckpt.LoopState(step=7, micro_batches=15, nonfinite_run=1, skipped_steps=2, loss_scale_skips=3,
                           micro_per_epoch=12, world_size=2)
    ckpt.save_loop_state(tmp_path, state)
    assert set(json.loads((tmp_path / ckpt.STATE_FILE).read_text())) == ON_DISK_KEYS
    assert ckpt.load_loop_state(tmp_path) == state
    assert state.position() == (1, 3)


def test_old_and_foreign_keys():
    old = ckpt.LoopState.from_dict({"step": 4, "micro_batches": 8})
    assert old == ckpt.LoopState(step=4, micro_batches=8)
    assert old.layout_changes(ckpt.LoopState(micro_per_epoch=12, world_size=1)) == {}  # unknown layout: no warning
    assert ckpt.LoopState.from_dict({"step": 1, "micro_batches": 2, "added_later": True}).step == 1
    with pytest.raises(ValueError, match="no micro_batches"):
        ckpt.LoopState.from_dict({"step": 1})


def test_summary_trainer_state_is_the_checkpoint_state(tiny, tmp_path):
    summary = train(_cfg(), output_dir=tmp_path, model=tiny.make_model(), dataset=tiny.TinyRegression(),
                    step_fn=tiny.make_step_fn())
    on_disk = ckpt.read_state(ckpt.final_path(tmp_path, 6))
    assert summary["trainer_state"] == on_disk
    assert set(on_disk) == ON_DISK_KEYS
    assert on_disk["step"] == 6 and on_disk["micro_batches"] == 12 and on_disk["micro_per_epoch"] == 12


def test_checkpoint_with_only_step_and_micro_batches_resumes_like_an_uninterrupted_run(tiny, tmp_path, capsys):
    """The trainer_state.json of checkpoints written before the skip counters and data layout were stored."""
    dataset = tiny.TinyRegression()
    straight = tiny.make_model(dropout=0.25)
    train(_cfg(checkpoint_every=0), output_dir=tmp_path / "straight", model=straight, dataset=dataset,
          step_fn=tiny.make_step_fn(noise=True))

    _reset_accelerate()
    train(_cfg(max_steps=3), output_dir=tmp_path / "resumed", model=tiny.make_model(dropout=0.25), dataset=dataset,
          step_fn=tiny.make_step_fn(noise=True))
    folder = ckpt.final_path(tmp_path / "resumed", 3)
    state = ckpt.read_state(folder)
    ckpt.write_state(folder, {"step": state["step"], "micro_batches": state["micro_batches"]})

    _reset_accelerate()
    capsys.readouterr()
    resumed = tiny.make_model(seed=5, dropout=0.25)
    summary = train(_cfg(resume="latest"), output_dir=tmp_path / "resumed", model=resumed, dataset=dataset,
                    step_fn=tiny.make_step_fn(noise=True))
    assert "different data layout" not in capsys.readouterr().out
    assert summary["steps"] == 6 and [h["step"] for h in summary["history"]] == [4, 5, 6]
    a, b = tiny.weights(straight), tiny.weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert set(ckpt.read_state(ckpt.final_path(tmp_path / "resumed", 6))) == ON_DISK_KEYS  # rewritten in full
