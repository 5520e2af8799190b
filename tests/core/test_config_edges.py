"""Hostile configs (issue 28). YAML alias bombs: nested aliases that expand to billions of values are refused in
bounded time and memory, by the recipe and by ``mmalign export`` of a foreign run folder (which reads its
``mmalign_config.yaml``); before, both hung until memory ran out. A NUL character in a value, an absurd resolution:
a config error naming the key, not a traceback or a MemoryError."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from mmalign.config import MISSING, ConfigError, load_config
from tests.helpers import REPO


def bomb_value(levels: int = 9, width: int = 9) -> str:
    """A YAML flow list holding ``width ** levels`` strings in a few hundred bytes (the "billion laughs")."""
    names = "abcdefghijklmnopqrstuvwxyz"
    items = ["&a [" + ", ".join(['"lol"'] * width) + "]"]
    items += [f"&{name} [" + ", ".join([f"*{prev}"] * width) + "]" for prev, name in zip(names, names[1:levels])]
    return "[" + ", ".join(items) + "]"


def alias_bomb() -> str:
    """A recipe YAML whose one free-form value is the bomb (unknown keys are refused before anything expands)."""
    return f"model: {{pretrained: x}}\nnote: {bomb_value()}\n"


@dataclass
class _Model:
    pretrained: str = MISSING


@dataclass
class _Recipe:
    model: _Model = field(default_factory=_Model)
    note: list = field(default_factory=list)


def test_the_bomb_is_refused_before_anything_is_built(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml: line \d+: the YAML expands to more than 100000 values"):
        load_config(_Recipe, path)
    assert time.perf_counter() - start < 5


def test_a_recursive_alias_is_refused_and_ordinary_aliases_still_load(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("model: {pretrained: x}\nnote: &n [1, *n]\n")
    with pytest.raises(ConfigError, match="refers to a value that contains it"):
        load_config(_Recipe, path)
    path.write_text("model: {pretrained: &p base}\nnote: [*p, *p, {k: *p}]\n")
    assert load_config(_Recipe, path).note == ["base", "base", {"k": "base"}]
    with pytest.raises(ConfigError, match="expands to more than"):  # an override value is YAML too
        load_config(_Recipe, None, ["model.pretrained=x", f"note={bomb_value()}"])


def _run_bounded(cmd: list[str], tmp_path, timeout: float = 180) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in GiB) of a real process, its address space capped at 8 GiB; a hang
    is killed and fails the test."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    err_path = tmp_path / "stderr.txt"
    start = time.perf_counter()
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err_file, preexec_fn=cap)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
            proc.wait()
            pytest.fail(f"{cmd[1:4]} still running after {timeout}s on a {len(alias_bomb())}-byte YAML")
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err_path.read_text(), time.perf_counter() - start, usage.ru_maxrss / 2**20


@pytest.mark.parametrize("entry", ["export", "recipe"])
def test_bomb_is_refused_by_a_real_process_in_bounded_time_and_memory(entry, tmp_path):
    bomb = alias_bomb()
    if entry == "export":  # a run folder someone sent: its config is read to find the base model
        folder = tmp_path / "foreign_run"
        folder.mkdir()
        (folder / "mmalign_config.yaml").write_text(bomb)
        (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
        cmd = [sys.executable, "-m", "mmalign", "export", str(folder), "--out", str(tmp_path / "out")]
    else:
        (tmp_path / "bomb.yaml").write_text(bomb)
        cmd = [sys.executable, str(REPO / "recipes" / "diffusion.py"), "--config", str(tmp_path / "bomb.yaml")]
    code, err, seconds, peak_gib = _run_bounded(cmd, tmp_path)
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and "the YAML expands to more than 100000 values through nested aliases" in err
    assert seconds < 120 and peak_gib < 3.0, (seconds, peak_gib)


def test_a_nul_character_in_a_value_is_a_config_error_naming_the_key(tmp_path):
    """Before: ``ValueError: embedded null byte`` from ``os.path.realpath`` with a traceback (issue 28)."""
    path = tmp_path / "nul.yaml"
    path.write_text('model: {pretrained: "base\\0dir"}\n')
    with pytest.raises(ConfigError, match=r"nul.yaml: config key 'model.pretrained' contains a NUL character"):
        load_config(_Recipe, path)
    with pytest.raises(ConfigError, match=r"command line: 'note' contains a NUL character"):
        load_config(_Recipe, None, ["model.pretrained=x", "note=[a\0b]"])


def test_an_absurd_resolution_is_refused_with_its_range():
    from mmalign.diffusion.config import DiffusionRecipeConfig

    config = REPO / "recipes" / "configs" / "diffusion" / "toy_dpo.yaml"
    for key in ("data.resolution", "validation.height"):
        with pytest.raises(ConfigError, match=rf"{key}.*100000.*<= 4096"):
            load_config(DiffusionRecipeConfig, config, [f"{key}=100000"])
