"""``mmalign label`` writes as it goes and resumes (issue 28): a real process interrupted with Ctrl-C at about 30 %
keeps the images and rows of the prompts it finished (before: nothing, every image was held in memory until the end),
and the same command again continues from them; the final files equal those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmalign.commands.label import PROGRESS_FILE
from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints
from tests.helpers import REPO

PROMPTS = [f"a {color} {shape} on the {side}" for color in ("red", "blue") for shape in ("circle", "square")
           for side in ("left", "right")] + ["a green triangle", "a yellow star"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline

    root = tmp_path_factory.mktemp("label")
    scorer_kwargs = save_tiny_scorer_checkpoints(root / "scorers")
    pipe = save_tiny_pipeline("sd15", root / "pipe")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    args = ["--pipeline", str(pipe), "--prompts", str(prompts), "--per-prompt", "2", "--scorer", "hpsv2,aesthetic",
            "--steps", "2", "--guidance-scale", "1.0", "--pairs", "all", "--device", "cpu"]
    for name in ("hpsv2", "aesthetic"):
        for key, value in scorer_kwargs[name].items():
            args += ["--scorer-arg", f"{name}.{key}={json.dumps(value) if isinstance(value, dict) else value}"]
    return args


def _command(args: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "mmalign", "label", *args, "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _rows(out: Path) -> list[dict]:
    path = out / PROGRESS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()[1:]] if path.is_file() else []


def _interrupt_at(args: list[str], out: Path, rows: int) -> tuple[int, str]:
    """Start the command, send SIGINT once ``rows`` prompts are on disk; return (exit code, stderr)."""
    proc = subprocess.Popen(_command(args, out), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    try:
        while len(_rows(out)) < rows:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _final(out: Path) -> tuple[list[dict], list[dict], dict]:
    ranked = [json.loads(line) for line in (out / "ranked.jsonl").read_text().splitlines()]
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    summary = json.loads((out / "label_summary.json").read_text())
    for key in ("ranked", "pairs"):
        summary.pop(key)  # paths of the output folder itself
    return ranked, pairs, summary


@pytest.mark.slow
def test_ctrl_c_at_30_percent_keeps_the_finished_prompts_and_a_rerun_continues_to_the_same_result(setup, tmp_path,
                                                                                                   capsys):
    from mmalign.cli import main

    interrupted, straight = tmp_path / "interrupted", tmp_path / "straight"
    code, err = _interrupt_at(setup, interrupted, rows=3)  # 3 of 10 prompts done
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "run the same command again to continue" in err, err[-3000:]
    kept = _rows(interrupted)
    assert 3 <= len(kept) < len(PROMPTS)
    assert [r["index"] for r in kept] == list(range(len(kept)))
    assert all((interrupted / image).is_file() for r in kept for image in r["images"])
    assert not (interrupted / "ranked.jsonl").exists()

    # the rerun and the uninterrupted run in this process (the interrupted one was the real process)
    assert main(["label", *setup, "--out", str(interrupted)]) == 0
    assert f"resuming: {len(kept)}/{len(PROMPTS)} prompts already labelled" in capsys.readouterr().err
    assert _rows(interrupted)[: len(kept)] == kept  # the finished prompts were not redone
    assert main(["label", *setup, "--out", str(straight)]) == 0
    assert _final(interrupted) == _final(straight)
    images = sorted(p.name for p in (straight / "images").iterdir())
    assert sorted(p.name for p in (interrupted / "images").iterdir()) == images
    assert len(images) == 2 * len(PROMPTS)  # content-named PNGs: equal names are equal images

    # other generation settings in the same folder are refused before the pipeline loads
    assert main(["label", *setup, "--seed", "1", "--out", str(interrupted)]) == 2
    assert "holds a labelling run with other settings (seed: 0 there, 1 now)" in capsys.readouterr().err
