"""Export a trained VLM: a peft adapter folder (LoRA) or a full model folder, and merging an adapter into its base.

* LoRA: ``save_pretrained`` of the peft model writes ``adapter_config.json`` + ``adapter_model.safetensors``
  (``base_model_name_or_path`` points at the base); the processor is saved next to it, so the folder loads with
  ``PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), folder)``.
* Full fine-tuning: the model's own ``save_pretrained`` (safetensors) + processor.
* :func:`merge_adapter`: a peft model → ``merge_and_unload()`` → the plain model (no-op for a plain model; the
  curriculum's per-stage merge); :func:`merge_adapter_folder`: base + adapter folder → a plain transformers folder
  (the ``mmalign export --merge`` operation for VLM adapters).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mmalign.unwrap import unwrap


def is_peft_adapter_dir(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a peft adapter (``adapter_config.json``)."""
    return (Path(folder) / "adapter_config.json").is_file()


def save_trained(model: torch.nn.Module, processor: Any, folder: str | os.PathLike) -> Path:
    """Write the peft adapter (or the full model) and the processor to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    model.save_pretrained(folder, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def load_trained(folder: str | os.PathLike, *, base: str | None = None, dtype: torch.dtype = torch.float32):
    """Load what :func:`save_trained` wrote: a ``PeftModel`` over its base (``base`` overrides the recorded
    ``base_model_name_or_path``), or a full model."""
    from transformers import AutoModelForImageTextToText

    folder = Path(folder)
    if not is_peft_adapter_dir(folder):
        return AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
    from peft import PeftModel

    recorded = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    base = base or recorded
    if not base:
        raise ValueError(f"{folder}/adapter_config.json records no base_model_name_or_path; pass base=")
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype)
    return PeftModel.from_pretrained(model, folder)


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """Fold a peft adapter into the base weights and return the plain model (no-op for a plain model)."""
    from peft import PeftModel

    model = unwrap(model)
    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def merge_adapter_folder(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike, *, base: str | None = None,
                         dtype: torch.dtype = torch.float32) -> Path:
    """Merge a VLM LoRA adapter into its base and write a complete transformers folder (+ processor)."""
    from transformers import AutoProcessor

    if not is_peft_adapter_dir(adapter_dir):
        raise ValueError(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
    merged = merge_adapter(load_trained(adapter_dir, base=base, dtype=dtype))
    output_dir = Path(output_dir)
    merged.save_pretrained(output_dir, safe_serialization=True)
    try:
        processor = AutoProcessor.from_pretrained(adapter_dir)
    except Exception:  # noqa: BLE001 - adapter saved without processor: take the base's
        processor = AutoProcessor.from_pretrained(base or merged.config._name_or_path)
    processor.save_pretrained(output_dir)
    return output_dir


def vlm_adapter_source(path: str | os.PathLike) -> Path | None:
    """The VLM export folder behind ``path``: the folder itself when it holds a peft adapter, or the
    ``adapter/`` sub-folder of a ``recipes/vlm.py`` run; ``None`` when ``path`` is neither."""
    path = Path(path)
    for candidate in (path, path / "adapter"):
        if is_peft_adapter_dir(candidate):
            return candidate
    return None


def export_vlm(path: str | os.PathLike, out: str | os.PathLike, *, merge: bool, base: str | None = None) -> Path:
    """``mmalign export`` for VLM runs: ``--merge`` writes base + adapter merged into a full transformers
    folder; without it the peft adapter folder (+ processor) is copied to ``out``."""
    import shutil

    source = vlm_adapter_source(path)
    if source is None:
        raise ValueError(f"{path}: neither a peft adapter folder nor a VLM run folder with adapter/")
    if (source / "adapter_model.safetensors").is_file():  # one line naming it, before the base model loads
        from mmalign.checkpoint import check_safetensors_file

        check_safetensors_file(source / "adapter_model.safetensors",
                               "the adapter is damaged: train.resume=latest on its run re-exports it")
    if merge:
        return merge_adapter_folder(source, out, base=base)
    shutil.copytree(source, out, dirs_exist_ok=True)
    return Path(out)
