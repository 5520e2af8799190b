"""A real two-process CPU (gloo) run of the shared loop equals one process with the same global batch.

Launched with torchrun (``python -m torch.distributed.run``): on a 2-core machine with accelerate 1.15,
``accelerate launch --cpu --num_processes 2`` and a MULTI_CPU accelerate config each started only one
process, while torchrun starts two and ``Accelerator()`` joins them (gloo backend on CPU).

Why the two agree: accelerate shards the loop's ``BatchSampler(EpochSampler)`` with ``BatchSamplerShard``
(``split_batches=False``), so rank r gets batches r, r+2, r+4, ... of the per-device batch size b. The two
ranks' batches k-th micro-step are therefore consecutive slices of the same permutation, i.e. exactly the
one-process batch of size 2b, and DDP averages the two ranks' mean-loss gradients = the gradient of the
mean over 2b examples. The EpochSampler permutation depends only on (seed, epoch), identical on all ranks.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from safetensors.torch import load_file

from mmalign.train_config import TrainConfig
from mmalign.training.loop import train
from tests.helpers import REPO

RUN = dict(max_steps=8, grad_accum=2, lr=0.05, lr_scheduler="linear", seed=11, progress_bar=False,
           checkpoint_every=4, keep_checkpoints=2)


def _torchrun(run_group, tiny, out, overrides: dict, *flags: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # make_accelerator itself must make the two processes join
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tiny.__file__), str(out), json.dumps(overrides), *flags]
    proc = run_group(cmd, env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_with_double_batch(run_group, tiny, tmp_path):
    out = tmp_path / "ddp"
    summary = _torchrun(run_group, tiny, out, {**RUN, "batch_size": 2}, "--then-resume-from=4")
    assert summary["world_size"] == 2
    assert summary["steps"] == 8

    # One process, per-device batch 4 = the same global batch (24 examples → 3 optimizer steps per epoch).
    single_model = tiny.make_model()
    single = train(TrainConfig(**RUN, batch_size=4), output_dir=tmp_path / "single", model=single_model,
                   dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    assert single["world_size"] == 1
    ddp_weights, ref = load_file(str(out / "final.safetensors")), tiny.weights(single_model)
    max_diff = max((ddp_weights[k] - ref[k]).abs().max().item() for k in ref)
    assert max_diff < 1e-5, f"2-process weights differ from 1-process weights by {max_diff}"
    init = tiny.weights(tiny.make_model())
    assert max((ref[k] - init[k]).abs().max().item() for k in ref) > 1e-2  # training moved the weights
    # Logged losses are the mean over both ranks, i.e. the one-process loss.
    for h_ddp, h_one in zip(summary["history"], single["history"], strict=True):
        assert h_ddp["loss"] == pytest.approx(h_one["loss"], abs=1e-5)

    # Two-process resume (same launch, fresh accelerate state) from the step-4 checkpoint: per rank 6 micro-batches per epoch, so step 4
    # (8 micro-batches) is 2 micro-batches into epoch 1; the resumed run must end on the same weights.
    resumed = json.loads((out / "resumed" / "summary.json").read_text())
    assert resumed["world_size"] == 2 and [h["step"] for h in resumed["history"]] == [5, 6, 7, 8]
    resumed_weights = load_file(str(out / "resumed" / "final.safetensors"))
    max_diff = max((resumed_weights[k] - ddp_weights[k]).abs().max().item() for k in ref)
    assert max_diff <= 1e-6, f"2-process resume differs from the uninterrupted 2-process run by {max_diff}"


@pytest.mark.slow
def test_accelerate_launch_with_the_multi_gpu_config_runs_two_processes_on_cpu(run_group, tiny, tmp_path):
    """The documented launcher, ``accelerate launch --config_file recipes/accelerate/multi_gpu.yaml``, on a
    machine without GPUs: accelerate starts two processes through torchrun and make_accelerator joins them."""
    out = tmp_path / "launched"
    run = {**RUN, "max_steps": 3, "checkpoint_every": 0}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    config = REPO / "recipes" / "accelerate" / "multi_gpu.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           str(tiny.__file__), str(out), json.dumps({**run, "batch_size": 2})]
    proc = run_group(cmd, env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3

    single_model = tiny.make_model()
    train(TrainConfig(**run, batch_size=4), output_dir=tmp_path / "single", model=single_model,
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    launched, ref = load_file(str(out / "final.safetensors")), tiny.weights(single_model)
    assert max((launched[k] - ref[k]).abs().max().item() for k in ref) < 1e-5
