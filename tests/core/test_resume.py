"""Resume equals an uninterrupted run (issue 2, item 4: ``resume: latest``)."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.loop import train


class SimulatedCrash(RuntimeError):
    pass


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=10, batch_size=2, grad_accum=3, lr=0.05, lr_scheduler="linear", warmup_steps=2,
                seed=3, progress_bar=False, checkpoint_every=5, keep_checkpoints=2)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_mid_epoch_equals_uninterrupted_run(tiny, tmp_path):
    """10 optimizer steps straight vs. crash after step 6 + ``resume: latest`` from the step-5 checkpoint.

    24 examples / batch 2 = 12 micro-batches per epoch; grad_accum 3 → 4 optimizer steps per epoch, so
    the step-5 checkpoint sits 3 micro-batches into epoch 1 and the run crosses into epoch 2. The step
    draws input noise from the global torch RNG and the model has dropout, so any RNG or data-order drift
    on resume changes the weights.
    """
    dataset = tiny.TinyRegression()
    straight_model = tiny.make_model(dropout=0.25)
    straight = train(_cfg(), output_dir=tmp_path / "straight", model=straight_model, dataset=dataset,
                     step_fn=tiny.make_step_fn(noise=True))
    assert straight["steps"] == 10

    from accelerate.state import AcceleratorState, GradientState

    crash_model = tiny.make_model(dropout=0.25)
    crash_step = tiny.make_step_fn(noise=True)

    def crashing_step(model, batch):
        if crash_step.calls["n"] == 6 * 3 + 1:  # the first micro-batch of step 7
            raise SimulatedCrash
        return crash_step(model, batch)

    with pytest.raises(SimulatedCrash):
        train(_cfg(), output_dir=tmp_path / "resumed", model=crash_model, dataset=dataset, step_fn=crashing_step)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "resumed")] == ["checkpoint-5"]
    state = ckpt.read_state(ckpt.latest_checkpoint(tmp_path / "resumed"))
    assert state["step"] == 5 and state["micro_batches"] == 15  # 15 = epoch 1 + 3 micro-batches

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed_model = tiny.make_model(seed=999, dropout=0.25)  # different init: the checkpoint must overwrite it
    resumed = train(_cfg(resume="latest"), output_dir=tmp_path / "resumed", model=resumed_model,
                    dataset=dataset, step_fn=tiny.make_step_fn(noise=True))
    assert resumed["steps"] == 10

    a, b = tiny.weights(straight_model), tiny.weights(resumed_model)
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert max_diff <= 1e-6, f"resumed weights differ from the uninterrupted run by {max_diff}"
    assert a.keys() == b.keys()
    # Training moved the weights (so the comparison is not vacuous) ...
    init = tiny.weights(tiny.make_model(dropout=0.25))
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-2
    # ... and the logged losses of the resumed steps equal those of the uninterrupted run.
    straight_loss = {h["step"]: h["loss"] for h in straight["history"]}
    for h in resumed["history"]:
        assert h["loss"] == pytest.approx(straight_loss[h["step"]], abs=1e-6), h["step"]
    assert [h["step"] for h in resumed["history"]] == list(range(6, 11))
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["steps"] == 10


def test_resume_from_final_checkpoint_does_nothing_more(tiny, tmp_path):
    """Resuming a finished run is a no-op: the weights stay those of the last checkpoint."""
    model = tiny.make_model()
    train(_cfg(max_steps=4, checkpoint_every=2, grad_accum=1), output_dir=tmp_path, model=model,
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    again = tiny.make_model(seed=1)
    summary = train(_cfg(max_steps=4, checkpoint_every=2, grad_accum=1, resume="latest"), output_dir=tmp_path,
                    model=again, dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    assert summary["steps"] == 4 and summary["history"] == []
    for k, v in tiny.weights(model).items():
        torch.testing.assert_close(tiny.weights(again)[k], v, rtol=0, atol=0)


def test_resume_with_a_different_batch_layout_warns(tiny, tmp_path, capsys):
    train(_cfg(max_steps=2, checkpoint_every=2, grad_accum=1), output_dir=tmp_path, model=tiny.make_model(),
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    assert ckpt.read_state(ckpt.latest_checkpoint(tmp_path))["micro_per_epoch"] == 12
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    capsys.readouterr()
    summary = train(_cfg(max_steps=3, grad_accum=1, batch_size=4, resume="latest"), output_dir=tmp_path,
                    model=tiny.make_model(), dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    assert summary["steps"] == 3
    assert "different data layout {'micro_per_epoch': (12, 6)}" in capsys.readouterr().out


class _AugmentedInWorker(torch.utils.data.Dataset):
    """Random augmentation drawn inside the DataLoader worker (seeded by the loader's base seed)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        item["x"] = item["x"] + 0.3 * torch.rand(item["x"].shape)
        return item


def test_resume_at_epoch_boundary_reproduces_worker_side_randomness(tiny, tmp_path):
    """num_workers=1 and an augmentation drawn in the worker: the worker seeds depend only on (seed, epoch),
    so a resume from the end of epoch 0 (step 6 of 24/4) ends on the uninterrupted run's weights."""
    dataset = _AugmentedInWorker(tiny.TinyRegression())
    cfg = dict(max_steps=9, batch_size=4, grad_accum=1, checkpoint_every=6, num_workers=1)
    straight = tiny.make_model()
    train(_cfg(**cfg), output_dir=tmp_path / "straight", model=straight, dataset=dataset,
          step_fn=tiny.make_step_fn())

    from accelerate.state import AcceleratorState, GradientState

    step_fn = tiny.make_step_fn()

    def crashing_step(model, batch):
        if step_fn.calls["n"] == 7:
            raise SimulatedCrash
        return step_fn(model, batch)

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    with pytest.raises(SimulatedCrash):
        train(_cfg(**cfg), output_dir=tmp_path / "resumed", model=tiny.make_model(), dataset=dataset,
              step_fn=crashing_step)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed = tiny.make_model(seed=5)
    train(_cfg(**cfg, resume="latest"), output_dir=tmp_path / "resumed", model=resumed, dataset=dataset,
          step_fn=tiny.make_step_fn())
    a, b = tiny.weights(straight), tiny.weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
