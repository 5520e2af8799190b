"""``train.resume`` checked before any model loads (issue 26): one line naming the file or key, exit 2, nothing in the
run folder touched.

:func:`check_resume` is what a recipe calls right after its config is loaded (before the run folder is locked or
written). It refuses, as a :class:`~mmalign.config.ConfigError`:

* a ``train.resume`` path that is not a complete checkpoint (no ``trainer_state.json``);
* a checkpoint whose files cannot be read safely: a ``trainer_state.json`` that is not a trainer state,
  ``trainable.safetensors`` that is not a safetensors file, an
  optimizer / scheduler / sampler / scaler state that weights-only loading refuses (a pickle with code in it is
  never executed), an unusable RNG state (unless ``train.resume_require_rng_state=false``);
* a config whose shape-defining keys (:data:`SHAPE_KEYS`: model, method, LoRA rank / alpha / targets, full vs LoRA,
  which vision side trains) differ from the run config the checkpoint records (``run_config.json``, written with
  every checkpoint by :func:`mmalign.training.loop.train`; older diffusion checkpoints: the run's ``mmalign_config.yaml``).

Reading the state files costs no model: tensors are memory-mapped (``mmap=True``), not read.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mmalign import checkpoint as ckpt
from mmalign.config_error import ConfigError

__all__ = ["SHAPE_KEYS", "check_resume", "recorded_run_config", "shape_differences"]

SHAPE_KEYS = ("model.pretrained", "method.name", "lora.rank", "lora.alpha", "lora.target_modules",
              "model.freeze_vision", "model.train_vision")
"""Config keys the saved weights depend on (a key missing from the config or the record is not compared)."""
STATE_FILES = re.compile(r"^((optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.bin|scaler\.pt)$")
"""The files accelerate's ``load_state`` reads with weights-only ``torch.load``."""
LEGACY_RUN_CONFIG = "mmalign_config.yaml"
"""The diffusion recipe's run config in the run folder (what checkpoints written before ``run_config.json`` have)."""
TINY = "tiny:"


def check_resume(cfg: Any, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``cfg.train.resume`` resumes from (``None``: a fresh start), after the checks above."""
    train = cfg.train
    checkpoint = ckpt.resolve_resume(train.resume, output_dir)
    if checkpoint is None:
        return None
    recorded, source = recorded_run_config(checkpoint)
    if recorded is not None:
        differences = shape_differences(recorded, _as_dict(cfg))
        if differences:
            key, saved, now = differences[0]
            raise ConfigError(
                f"train.resume: {key} is {_show(key, now)} in this config but {_show(key, saved)} in the run that "
                f"wrote {checkpoint} ({source}); its weights only fit that setting: resume with {key}={_plain(saved)} "
                "or train into a new output_dir"
            )
    check_state_files(checkpoint, require_rng=train.resume_require_rng_state)
    return checkpoint


def check_state_files(checkpoint: Path, require_rng: bool = True) -> None:
    """Every state file of ``checkpoint`` loads the way ``load_state`` will load it (one line naming the file)."""
    try:
        ckpt.load_loop_state(checkpoint)
    except (OSError, ValueError, TypeError) as exc:  # not JSON, not a mapping, missing counters, unknown types
        raise ConfigError(f"train.resume: {checkpoint / ckpt.STATE_FILE} is not a usable trainer state "
                          f"({_one_line(exc)}); resume from another checkpoint") from None
    ckpt.check_trainable_file(checkpoint)
    if not (checkpoint / ckpt.TRAINABLE_FILE).is_file() and not _sharded(checkpoint):
        raise ConfigError(f"train.resume: {checkpoint / ckpt.TRAINABLE_FILE} is missing (the trained weights); the "
                          "checkpoint is incomplete: resume from another checkpoint")
    for path in sorted(checkpoint.iterdir()):
        if STATE_FILES.match(path.name):
            problem = _weights_only_problem(path)
            if problem:
                raise ConfigError(f"train.resume: {path} cannot be loaded ({problem}); the checkpoint is damaged or "
                                  "was not written by mmalign: resume from another checkpoint")
    if require_rng:
        problem = ckpt.rng_state_problem(checkpoint, int(os.environ.get("RANK", "0")))
        if problem:
            raise ConfigError(f"train.resume: checkpoint {checkpoint} cannot restore the random state: {problem}; "
                              "set train.resume_require_rng_state=false to resume anyway (randomness then differs "
                              "from an uninterrupted run)")


def _sharded(checkpoint: Path) -> bool:
    """A DeepSpeed / FSDP checkpoint (accelerate saved the model itself: no ``trainable.safetensors``)."""
    return (checkpoint / "latest").is_file() or any(p.name.startswith("pytorch_model") for p in checkpoint.iterdir())


def _weights_only_problem(path: Path) -> str | None:
    """Why weights-only ``torch.load`` (accelerate's ``load``) refuses ``path``, in one line; ``None`` if it loads."""
    import warnings

    from accelerate.utils import load

    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols: the error below says enough
            warnings.simplefilter("ignore")
            try:
                load(path, map_location="cpu", mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                load(path, map_location="cpu")  # a legacy (non-zip) torch.save file: no mmap, read it whole
    except Exception as exc:  # any failure here is the one load_state would raise (with a traceback)
        return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    """The line of torch's multi-line weights-only message that says what was refused (else the first line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        said = [line for line in lines[1:] if "unsupported" in line.lower() or "GLOBAL" in line]
        return f"weights-only loading refused it: {(said or lines[:1])[0].rstrip('.')}"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def recorded_run_config(checkpoint: Path) -> tuple[dict[str, Any] | None, str]:
    """``(run config, file it came from)`` the checkpoint was trained with; ``(None, "")`` when none is recorded."""
    path = checkpoint / ckpt.RUN_CONFIG_FILE
    if not path.is_file():
        legacy = checkpoint.parent.parent / LEGACY_RUN_CONFIG
        if not legacy.is_file():
            return None, ""
        import yaml

        try:
            data = yaml.safe_load(legacy.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return None, ""
        return (data if isinstance(data, dict) else None), str(legacy)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"train.resume: {path} is unreadable ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"train.resume: {path} is not a run config (a JSON mapping)")
    return data, str(path)


def shape_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(key, recorded value, value now)]`` for the :data:`SHAPE_KEYS` that differ."""
    out = []
    for key in SHAPE_KEYS:
        saved, current = _value(recorded, key), _value(now, key)
        if saved is _ABSENT or current is _ABSENT:
            continue
        if key == "model.pretrained" and _same_model(saved, current):
            continue
        if saved != current:
            out.append((key, saved, current))
    return out


_ABSENT = object()


def _value(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    if key == "lora.alpha" and node is None:  # null alpha means alpha = rank
        return _value(config, "lora.rank")
    if key == "lora.target_modules" and isinstance(node, list):
        return sorted(node)
    return node


MODEL_CONFIG_FILES = ("model_index.json", "config.json")
"""What identifies a local model folder (diffusers pipeline / transformers model) without loading it."""


def _same_model(saved: Any, now: Any) -> bool:
    """Whether ``model.pretrained`` still names the model the checkpoint was trained on.

    ``tiny:<kind>`` (not resolved yet) is the folder ``.../model_<kind>`` it resolves to. Two existing local folders
    are the same model when their ``model_index.json`` / ``config.json`` are identical (a folder moved or copied to
    another machine). A hub id and a local folder, or a recorded folder that no longer exists here, cannot be told
    apart without loading (or the network): not refused here (a real shape change still fails when the weights
    load). Two different hub ids are different models."""
    saved, now = str(saved), str(now)
    if saved == now:
        return True
    if now.startswith(TINY) and not saved.startswith(TINY):
        return Path(saved).name == f"model_{now[len(TINY):]}"
    saved_dir, now_dir = Path(saved).is_dir(), Path(now).is_dir()
    if saved_dir and now_dir:
        return any((Path(saved) / name).is_file() and (Path(now) / name).is_file()
                   and (Path(saved) / name).read_bytes() == (Path(now) / name).read_bytes()
                   for name in MODEL_CONFIG_FILES)
    local = [saved_dir, now_dir, _looks_like_path(saved), _looks_like_path(now)]
    return any(local)  # at least one side is local: cannot tell; two different hub ids: different models


def _looks_like_path(value: str) -> bool:
    """A local path (absolute, ``./``, ``~``, or deeper than a hub id's ``org/name``) rather than a hub id."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1


def _show(key: str, value: Any) -> str:
    if key == "lora.rank" and value == 0:
        return "0 (full fine-tuning)"
    return repr(value) if isinstance(value, str) else _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "as_dict"):
        return cfg.as_dict()
    from mmalign.config import to_dict

    return to_dict(cfg)
