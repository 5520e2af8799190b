"""Nothing trained is lost at the edges of a run (issue 28): a Ctrl-C during the final validation or the export, a full
disk at the TensorBoard flush of a log step or at the export. Each case is a real training process
(``tests/core/tiny_run.py``); before, the first two ended in a traceback with nothing on disk, the last two in a raw
``OSError`` or "the last complete checkpoint is none".

Full disks are real: the run's output folder is a small tmpfs mounted for the test (root only; the tests are
skipped where ``mount`` is not allowed), filled from the test process while the run trains.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mmalign import checkpoint as ckpt
from mmalign.train_config import TrainConfig
from mmalign.training.loop import train

RUN = dict(max_steps=6, batch_size=2, grad_accum=2, lr=0.05, seed=5, progress_bar=False)


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """The weights of the uninterrupted run (the same config, in this process)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    model = tiny.make_model()
    train(TrainConfig(**RUN), output_dir=tmp_path_factory.mktemp("straight"), model=model,
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))
    return tiny.weights(model)


def _start(tiny, out: Path, *flags: str, run: dict | None = None, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(tiny.__file__), str(out), json.dumps(run or RUN), "--noise", "--recipe-entry", *flags],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)],
    )


def _signal_at(proc: subprocess.Popen, line: str, sig: int) -> tuple[int, str]:
    lines = []
    try:
        for got in proc.stdout:
            lines.append(got)
            if got.strip() == line:
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, "".join(lines) + rest


def _trainable_equal(path: Path, expected: dict) -> None:
    saved = load_file(str(path))
    assert saved.keys() == expected.keys()
    for k in expected:
        assert (saved[k] == expected[k]).all(), k


@pytest.mark.parametrize(("phase", "flags", "line", "sig"), [
    ("the end of training", ["--validate-sleep=120"], "validating", signal.SIGINT),
    ("the export", ["--export", "--export-sleep=120"], "exporting", signal.SIGINT),
    ("the export", ["--export", "--export-sleep=120"], "exporting", signal.SIGHUP),
])
def test_a_signal_after_the_loop_keeps_the_trained_weights(tiny, straight, tmp_path, phase, flags, line, sig):
    out = tmp_path / "run"
    code, output = _signal_at(_start(tiny, out, *flags), line, sig)
    name = signal.Signals(sig).name
    assert code == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert f"stopped by {name} during {phase}" in output and "after step 6/6" in output
    kept = ckpt.final_path(out, 6)
    assert f"kept in checkpoint {kept}; re-export with `mmalign export {kept}" in output
    assert "train.resume=latest" in output
    _trainable_equal(kept / ckpt.TRAINABLE_FILE, straight)
    assert not (out / "final.safetensors").exists()  # the export never ran to its end

    # ... and the run finishes from it: resume=latest starts at the last step, trains nothing, exports
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    model = tiny.make_model(seed=99)
    summary = train(TrainConfig(**RUN, resume="latest"), output_dir=out, model=model,
                    dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))
    assert summary["steps"] == 6 and summary["history"] == []
    assert all((tiny.weights(model)[k] == straight[k]).all() for k in straight)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at ``tmp_path / 'disk'`` (a real filesystem that fills up), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", f"mmalign-test-{uuid.uuid4().hex[:8]}",
                             str(disk)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    """Write until the filesystem is full (a real ENOSPC)."""
    with open(disk / "ballast.bin", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28
    with open(disk / "ballast-small.bin", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass


def test_disk_full_at_the_tensorboard_flush_keeps_the_weights_of_the_last_step(tiny, small_disk, tmp_path):
    """The disk fills during training (default ``checkpoint_every: 0``): the first write to fail is TensorBoard's
    flush at a log step. The weights of that step are written where they fit: here, with the output disk full,
    in ``$MMALIGN_RESCUE_DIR``; the error is one line saying so, exit 1."""
    out = small_disk / "run"
    rescue = tmp_path / "rescue"
    run = {**RUN, "max_steps": 200, "log_every": 1}
    proc = _start(tiny, out, "--announce", run=run, env={"MMALIGN_RESCUE_DIR": str(rescue)})
    lines = []
    for got in proc.stdout:
        lines.append(got)
        if got.strip() == "micro 6":
            _fill(small_disk)
            break
    rest, _ = proc.communicate(timeout=180)
    output = "".join(lines) + rest
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    found = re.search(r"error: \[Errno 28\] no space left on device (.*) during training; the trained weights of "
                      r"step (\d+)/200 are kept in (\S+/trainable\.safetensors) \(weights only", output)
    assert found, output[-3000:]
    assert found.group(1) == f"while writing the TensorBoard logs ({out / 'logs'})", found.group(1)
    step, kept = int(found.group(2)), Path(found.group(3))
    assert 3 <= step < 200 and kept.is_relative_to(rescue)
    assert (kept.parent / "mmalign_config.yaml").exists() is False  # the tiny run has no recipe config
    assert ckpt.read_state(kept.parent)["step"] == step

    # the same number of steps without a full disk gives exactly these weights
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    model = tiny.make_model()
    train(TrainConfig(**{**run, "max_steps": step}), output_dir=tmp_path / "straight", model=model,
          dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))
    _trainable_equal(kept, tiny.weights(model))


def test_disk_full_at_the_export_keeps_the_weights_elsewhere(tiny, straight, small_disk, tmp_path):
    """The export (here 8 MiB: a merged model is larger than the LoRA) fills the output disk; the checkpoint that
    used to be written as the fallback goes to the same full disk and fails too; the weights go elsewhere."""
    out = small_disk / "run"
    rescue = tmp_path / "rescue"
    proc = _start(tiny, out, "--export", f"--export-pad={8 * 2**20}", env={"MMALIGN_RESCUE_DIR": str(rescue)})
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    found = re.search(r"error: \[Errno 28\] no space left on device .* during the export; the trained weights of "
                      r"step 6/6 are kept in (\S+/trainable\.safetensors) \(weights only, no optimizer state \(a full "
                      r"checkpoint was not written: checkpoint \S+checkpoint-6: ", output)
    assert found, output[-3000:]
    kept = Path(found.group(1))
    assert kept.is_relative_to(rescue)
    _trainable_equal(kept, straight)


def test_the_file_size_limit_at_the_export_keeps_a_checkpoint(tiny, straight, tmp_path):
    """``ulimit -f`` (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past it raises EFBIG): the export's large file
    fails, the checkpoint (each file under the limit) is written, and the message says which limit was hit."""
    import resource

    out = tmp_path / "run"
    limit = 2 * 2**20

    def cap() -> None:
        for s in (signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.Popen(
        [sys.executable, str(tiny.__file__), str(out), json.dumps(RUN), "--noise", "--recipe-entry", "--export",
         f"--export-pad={4 * limit}"], env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=cap)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    kept = ckpt.final_path(out, 6)
    assert re.search(r"error: \[Errno 28\] file size limit reached \(ulimit -f\) .*File too large.* during the "
                     f"export; the trained weights of step 6/6 are kept in checkpoint {re.escape(str(kept))}; ",
                     output), output[-3000:]
    _trainable_equal(kept / ckpt.TRAINABLE_FILE, straight)


def test_a_full_cache_disk_is_one_clear_error(small_disk):
    """The latent / text cache on a full disk (before: a raw ``SafetensorError`` with a traceback and a half-written
    file left behind): a :class:`~mmalign.disk_errors.DiskFullError` naming the cache and the way out."""
    import torch

    from mmalign.diffusion.cache import LatentTextCache
    from mmalign.disk_errors import DiskFullError

    cache = LatentTextCache(small_disk / "cache", "vae", "text", 64)
    cache.put_prompt("a first prompt", {"embeds": torch.ones(4, 8)})
    _fill(small_disk)
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*cache.*; nothing trained is "
                                            r"lost .* set data.cache_dir to a disk with room"):
        cache.put_prompt("a second prompt", {"embeds": torch.ones(256, 1024)})
    assert not list((small_disk / "cache").rglob("*.tmp"))
    assert cache.has_prompt("a first prompt") and not cache.has_prompt("a second prompt")
