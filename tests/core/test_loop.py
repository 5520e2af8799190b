"""The shared loop's guards and bookkeeping (issue 2, item 4): NaN/inf guard, gradient accumulation,
checkpoint retention, summary.json and TensorBoard logs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.distributed import make_accelerator
from mmalign.training.loop import NonFiniteLossError, train


def _cfg(**kw) -> TrainConfig:
    base = dict(batch_size=2, grad_accum=2, lr=0.05, lr_scheduler="constant", seed=4, progress_bar=False)
    base.update(kw)
    return TrainConfig(**base)


def _run(tiny, tmp_path, name, cfg, step_fn, accelerator=None):
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    model = tiny.make_model()
    out = tmp_path / name
    summary = train(cfg, output_dir=out, model=model, dataset=tiny.TinyRegression(), step_fn=step_fn,
                    accelerator=accelerator(cfg, out) if accelerator else None)
    return model, summary


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_nonfinite_step_is_skipped_and_counted(tiny, tmp_path):
    """Step 3 (micro-batches 5-6) gets a NaN loss in micro-batch 5: that step leaves the weights as step 2 left
    them, is counted in skipped_steps, and training goes on from there."""
    two, _ = _run(tiny, tmp_path, "two", _cfg(max_steps=2), tiny.make_step_fn())
    three, s3 = _run(tiny, tmp_path, "three", _cfg(max_steps=3), tiny.make_step_fn(nan_at_calls={5}))
    assert _max_diff(tiny.weights(two), tiny.weights(three)) == 0.0
    assert s3["skipped_steps"] == 1 and s3["steps"] == 3
    assert math.isnan(s3["history"][2]["loss"]) and math.isfinite(s3["history"][1]["loss"])

    five, s5 = _run(tiny, tmp_path, "five", _cfg(max_steps=5), tiny.make_step_fn(nan_at_calls={5}))
    assert s5["skipped_steps"] == 1 and all(math.isfinite(h["loss"]) for h in s5["history"][3:])
    assert _max_diff(tiny.weights(three), tiny.weights(five)) > 1e-3  # steps 4-5 trained again
    on_disk = json.loads((tmp_path / "five" / "summary.json").read_text())
    assert on_disk["skipped_steps"] == 1


def test_inf_loss_is_skipped_too(tiny, tmp_path):
    def inf_step(model, batch):
        loss, metrics = base(model, batch)
        return (loss + float("inf")) if base.calls["n"] == 1 else loss, metrics

    base = tiny.make_step_fn()
    model, summary = _run(tiny, tmp_path, "inf", _cfg(max_steps=1), inf_step)
    assert summary["skipped_steps"] == 1
    assert _max_diff(tiny.weights(model), tiny.weights(tiny.make_model())) == 0.0


def test_nonfinite_steps_in_a_row_stop_the_run(tiny, tmp_path):
    """NaN from step 2 on with max_nonfinite_steps=3: steps 2, 3, 4 are skipped, then NonFiniteLossError;
    non-consecutive NaN steps (2 and 4 with a limit of 2) do not stop the run."""
    step_fn = tiny.make_step_fn(nan_at_calls=set(range(3, 100)))
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive non-finite steps .*max_nonfinite_steps=3"):
        _run(tiny, tmp_path, "stop", _cfg(max_steps=10, max_nonfinite_steps=3), step_fn)
    assert step_fn.calls["n"] == 4 * 2  # stopped right after step 4

    _, summary = _run(tiny, tmp_path, "gaps", _cfg(max_steps=5, max_nonfinite_steps=2),
                      tiny.make_step_fn(nan_at_calls={3, 7}))
    assert summary["steps"] == 5 and summary["skipped_steps"] == 2


def test_fp16_loss_scale_overflow_lowers_the_scale_instead_of_stopping(tiny, tmp_path):
    """With a GradScaler (fp16), inf/NaN gradients of a finite loss are overflows: the scaler must see
    optimizer.step() to skip the update and halve its scale. Real fp16 autocast + torch's CPU GradScaler
    (accelerate only builds them on GPUs, so they are switched on by hand) at an initial scale of 2**20:
    fp16 backward overflows until the scale reaches 2**14. Before the fix the loop skipped
    optimizer.step(), the scale never moved and max_nonfinite_steps=2 stopped the run at step 2."""

    def fp16_on_cpu(cfg, out):
        accelerator = make_accelerator(cfg, out, log_with=None)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=10_000)
        accelerator.native_amp = True  # autocast(float16) around forward; scaler unscale in clip_grad_norm_
        accelerator.state._mixed_precision = "fp16"
        holder["accelerator"] = accelerator
        return accelerator

    holder = {}
    model, summary = _run(tiny, tmp_path, "fp16", _cfg(max_steps=12, grad_accum=1, max_nonfinite_steps=2),
                          tiny.make_step_fn(), accelerator=fp16_on_cpu)
    assert summary["skipped_steps"] == 0 and summary["steps"] == 12
    assert summary["loss_scale_skips"] == 6
    assert holder["accelerator"].scaler.get_scale() == 2.0**14
    assert _max_diff(tiny.weights(model), tiny.weights(tiny.make_model())) > 1e-3


def test_grad_accumulation_equals_larger_batch(tiny, tmp_path):
    """batch 2 x accumulation 2 == batch 4 x accumulation 1 for a mean loss (over 2 epochs of 24 examples)."""
    accumulated, sa = _run(tiny, tmp_path, "accum", _cfg(max_steps=12, batch_size=2, grad_accum=2,
                                                          lr_scheduler="linear", warmup_steps=2),
                           tiny.make_step_fn())
    large, sl = _run(tiny, tmp_path, "large", _cfg(max_steps=12, batch_size=4, grad_accum=1,
                                                   lr_scheduler="linear", warmup_steps=2),
                     tiny.make_step_fn())
    diff = _max_diff(tiny.weights(accumulated), tiny.weights(large))
    assert diff < 1e-5, diff
    assert _max_diff(tiny.weights(large), tiny.weights(tiny.make_model())) > 1e-2
    for a, b in zip(sa["history"], sl["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["lr"] == pytest.approx(b["lr"])
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_keeps_newest_checkpoints_writes_summary_and_tensorboard(tiny, tmp_path):
    cfg = _cfg(max_steps=7, checkpoint_every=2, keep_checkpoints=2, checkpoint_at_end=True, log_every=2)
    _, summary = _run(tiny, tmp_path, "run", cfg, tiny.make_step_fn())
    out = tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-6", "checkpoint-7"]
    assert sorted(p.name for p in ckpt.checkpoints_dir(out).iterdir()) == ["checkpoint-6", "checkpoint-7"]
    state = ckpt.read_state(ckpt.final_path(out, 7))
    assert state["step"] == 7 and state["micro_batches"] == 14
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["steps"] == 7 and on_disk["world_size"] == 1 and on_disk["skipped_steps"] == 0
    assert [h["step"] for h in on_disk["history"]] == [2, 4, 6, 7]  # every log_every steps and the last
    for key in ("loss", "grad_norm", "lr", "samples_per_s", "peak_mem_gib", "first_index"):
        assert math.isfinite(on_disk["final"][key]), key
    assert on_disk == json.loads(json.dumps(summary, default=str))
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [2, 4, 6, 7]
    assert acc.Scalars("loss")[-1].value == pytest.approx(on_disk["final"]["loss"], rel=1e-6)


def test_keep_zero_keeps_all_checkpoints(tiny, tmp_path):
    _run(tiny, tmp_path, "all", _cfg(max_steps=4, checkpoint_every=1, keep_checkpoints=0), tiny.make_step_fn())
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "all")] == [f"checkpoint-{i}" for i in range(1, 5)]


def test_consecutive_runs_in_one_process_do_not_leak_state(tiny, tmp_path):
    """Curricula (TEMPLE stages) call train() several times in one process without resetting accelerate:
    a run after another one (different accumulation, stopped mid-epoch) equals the same run alone."""
    first = _cfg(max_steps=3, grad_accum=2)
    second = _cfg(max_steps=4, grad_accum=3, batch_size=3, seed=9)
    alone, _ = _run(tiny, tmp_path, "alone", second, tiny.make_step_fn(noise=True))

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    train(first, output_dir=tmp_path / "stage1", model=tiny.make_model(), dataset=tiny.TinyRegression(),
          step_fn=tiny.make_step_fn(noise=True))
    after = tiny.make_model()
    summary = train(second, output_dir=tmp_path / "stage2", model=after, dataset=tiny.TinyRegression(),
                    step_fn=tiny.make_step_fn(noise=True))
    assert summary["steps"] == 4
    assert _max_diff(tiny.weights(alone), tiny.weights(after)) <= 1e-6
