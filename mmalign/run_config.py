"""The run config: the resolved config of a run, saved as ``<output_dir>/mmalign_config.yaml``.

Written by every recipe (:func:`mmalign.recipe.run`) before training, so a checkpoint of an interrupted run can be
exported, and copied next to the exported model by ``mmalign export``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

RUN_CONFIG = "mmalign_config.yaml"


def run_config_dict(cfg: Any) -> dict[str, Any]:
    """The run config as saved: the schema's own ``as_dict`` (e.g. only the chosen method's options) or all
    fields."""
    as_dict = getattr(cfg, "as_dict", None)
    return as_dict() if as_dict is not None else dataclasses.asdict(cfg)


def save_run_config(cfg: Any, output_dir: str | os.PathLike) -> Path:
    import yaml

    path = Path(output_dir) / RUN_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(run_config_dict(cfg), sort_keys=False))
    return path


def copy_run_config(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """Copy the run config of the run behind ``source`` (a run folder, a checkpoint inside it, or an export with its
    own copy) into ``out_dir``; None when there is none."""
    source = Path(source)
    for folder in (source, source.parent, source.parent.parent):
        path = folder / RUN_CONFIG
        if path.is_file():
            out = Path(out_dir) / RUN_CONFIG
            if path.resolve() != out.resolve():
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out)
            return out
    return None
