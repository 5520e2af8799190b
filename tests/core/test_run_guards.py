"""Guards around a run (issue 18): one run per output folder (PID named, stale locks taken over), resume refuses a
checkpoint without a usable RNG state, a full disk is named as such, a failed export keeps a checkpoint."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from mmalign import checkpoint as ckpt
from mmalign import disk_errors
from mmalign.config import ConfigError
from mmalign.run_lock import LOCK_NAME, RunFolderLockedError, lock_run_folder, release_run_folder
from mmalign.train_config import TrainConfig
from mmalign.training.distributed import make_accelerator
from mmalign.training.loop import train

RUN = dict(max_steps=4, batch_size=2, lr=0.05, seed=3, checkpoint_every=2, keep_checkpoints=3, progress_bar=False)


def _run(tiny, out, **overrides):
    return train(TrainConfig(**{**RUN, **overrides}), output_dir=out, model=tiny.make_model(),
                 dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn(noise=True))


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock of ``tmp_path / 'run'``."""
    out = tmp_path / "run"
    code = ("import sys, time; from mmalign.run_lock import lock_run_folder; lock_run_folder(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_second_run_on_a_locked_folder_fails_at_once_naming_the_pid(tiny, holder, capsys):
    out, proc = holder
    with pytest.raises(RunFolderLockedError, match=f"in use by another run \\(PID {proc.pid} on "):
        _run(tiny, out)
    assert not (out / "checkpoints").exists()  # nothing of the holder's folder was touched

    # A recipe reports it as one line and exit code 2.
    from mmalign.recipe_entry import run_recipe

    assert run_recipe(lambda argv: lock_run_folder(out), []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"PID {proc.pid}" in err[0]

    # The holder dies without cleaning up (SIGKILL): the next run takes the folder over and says so.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert str(proc.pid) in (out / LOCK_NAME).read_text()
    note = lock_run_folder(out)
    assert note and f"stale lock of PID {proc.pid}" in note
    assert str(os.getpid()) in (out / LOCK_NAME).read_text()
    _reset_accelerate()
    assert _run(tiny, out)["steps"] == 4
    release_run_folder(out)


def test_resume_refuses_missing_or_corrupt_rng_state_unless_opted_out(tiny, tmp_path):
    out = tmp_path / "run"
    _run(tiny, out)
    rng = ckpt.final_path(out, 2) / "random_states_0.pkl"
    data = rng.read_bytes()
    for damage, words in ((lambda: rng.write_bytes(data[: len(data) // 2]), "unreadable"),
                          (rng.unlink, "missing")):
        damage()
        _reset_accelerate()
        with pytest.raises(ConfigError, match=f"random_states_0.pkl is {words}.*resume_require_rng_state=false"):
            _run(tiny, tmp_path / "resumed", resume=str(ckpt.final_path(out, 2)))
    _reset_accelerate()
    summary = _run(tiny, tmp_path / "resumed", resume=str(ckpt.final_path(out, 2)), resume_require_rng_state=False)
    assert summary["steps"] == 4 and summary["history"][0]["step"] == 3


def test_disk_full_during_a_checkpoint_names_path_and_last_checkpoint(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = ckpt.save_trainable

    def full_at_step_4(model, folder):
        if str(folder).endswith(".tmp-checkpoint-4"):
            raise OSError(errno.ENOSPC, "No space left on device")
        original(model, folder)

    monkeypatch.setattr(ckpt, "save_trainable", full_at_step_4)
    with pytest.raises(disk_errors.DiskFullError) as info:
        _run(tiny, out)
    # the weights of step 4 are kept in the largest form that fits (issue 28: before, steps 3-4 were lost)
    weights = ckpt.checkpoints_dir(out) / "weights-4"
    assert str(info.value).startswith(
        f"[Errno 28] no space left on device while writing {ckpt.temp_path(out, 4)} during training; the trained "
        f"weights of step 4/4 are kept in {weights / ckpt.TRAINABLE_FILE} (weights only, no optimizer state (a full "
        f"checkpoint was not written: checkpoint {ckpt.final_path(out, 4)}: no space left on device)); export with "
        f"`mmalign export {weights} --out <dir>`"), str(info.value)
    assert not ckpt.temp_path(out, 4).exists()  # the half-written folder is removed (frees the space)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-2"]
    assert ckpt.read_state(weights)["step"] == 4


@pytest.mark.parametrize(("free", "translated"), [(1024, True), (50 * 2**30, False)])
def test_torch_stream_errors_count_as_disk_full_only_when_the_disk_is_full(tmp_path, monkeypatch, free, translated):
    monkeypatch.setattr(disk_errors, "free_bytes", lambda path: free)
    error = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1024 vs 960")
    with pytest.raises(disk_errors.DiskFullError if translated else RuntimeError) as info:
        with disk_errors.writing(tmp_path / "x", lambda: "nothing to recover"):
            raise error
    assert isinstance(info.value, disk_errors.DiskFullError) == translated


def test_failed_export_keeps_a_checkpoint_to_export_or_resume_from(tiny, tmp_path):
    from mmalign.safe_export import ExportFailedError, export_or_keep_checkpoint

    out = tmp_path / "run"
    cfg = TrainConfig(**{**RUN, "checkpoint_every": 0})  # the default: no checkpoint at all before
    accelerator = make_accelerator(cfg, out, log_with=None)
    model = tiny.make_model()
    summary = train(cfg, output_dir=out, model=model, dataset=tiny.TinyRegression(),
                    step_fn=tiny.make_step_fn(noise=True), accelerator=accelerator)
    assert ckpt.list_checkpoints(out) == []

    def export():
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "pytorch_lora_weights.safetensors"))

    with pytest.raises(ExportFailedError, match=r"kept in checkpoint .*checkpoint-4; re-export with `mmalign export"):
        export_or_keep_checkpoint(export, accelerator, cfg, out, summary)
    saved = ckpt.final_path(out, 4)
    reloaded = tiny.make_model(seed=11)
    ckpt.load_trainable(reloaded, saved)
    a, b = tiny.weights(model), tiny.weights(reloaded)
    assert all((a[k] == b[k]).all() for k in a)
    _reset_accelerate()  # resume=latest starts at the last step: no training, straight to the export
    again = train(TrainConfig(**{**RUN, "checkpoint_every": 0, "resume": "latest"}), output_dir=out,
                  model=tiny.make_model(seed=11), dataset=tiny.TinyRegression(), step_fn=tiny.make_step_fn())
    assert again["steps"] == 4 and again["history"] == []


def test_recipes_report_explained_faults_in_one_line_with_exit_1(capsys):
    from mmalign.recipe_entry import run_recipe

    def full_disk(argv):
        raise disk_errors.DiskFullError(errno.ENOSPC, "no space left on device while writing x; the last complete "
                                                      "checkpoint is y")

    assert run_recipe(full_disk, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on device while writing x; the last complete checkpoint is y" in err[0]
