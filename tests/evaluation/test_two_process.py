"""``mmalign evaluate`` under a two-process launch (torchrun, gloo on CPU; ``accelerate launch`` sets the same
environment) splits the images between the processes (image k on rank k % 2) and reports what one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmalign.cli import main
from tests.helpers import REPO

from .test_evaluate_command import _args, _prompt_file

pytestmark = pytest.mark.slow


def test_two_processes_split_the_images_and_agree_with_one(tiny_models, tiny_scorer_args, tmp_path):
    base, lora = tiny_models["sd15"]
    args, _ = tiny_scorer_args
    prompts = _prompt_file(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(lora, base, prompts, one, args)) == 0

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mmalign",
           *_args(lora, base, prompts, two, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ev1, ev2 = (json.loads((d / "eval.json").read_text()) for d in (one, two))
    assert ev2["num_processes"] == 2 and ev1["num_processes"] == 1
    assert sorted(p.name for p in (two / "parts").iterdir()) == ["scores.rank0.json", "scores.rank1.json"]
    part1 = json.loads((two / "parts" / "scores.rank1.json").read_text())
    assert sorted(int(k) for k in part1["pickscore"]["base"]) == [1, 3]  # rank 1 drew images 1 and 3
    for which in ("base", "aligned"):
        for k in range(4):
            a = np.asarray(Image.open(one / "images" / which / f"{k:05d}.png")).astype(int)
            b = np.asarray(Image.open(two / "images" / which / f"{k:05d}.png")).astype(int)
            assert np.abs(a - b).max() <= 1
    for name in ("pickscore", "aesthetic"):
        r1, r2 = ev1["scorers"][name], ev2["scorers"][name]
        assert r2["base"]["mean"] == pytest.approx(r1["base"]["mean"], abs=1e-3)
        assert r2["aligned"]["mean"] == pytest.approx(r1["aligned"]["mean"], abs=1e-3)
