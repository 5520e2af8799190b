"""What ``mmalign evaluate`` compares: the base pipeline and the aligned model, resolved before any model loads.

``<aligned>`` is one of

* a run folder of ``recipes/diffusion.py`` (holds ``mmalign_config.yaml``) with its exported model: the LoRA
  (``pytorch_lora_weights.safetensors``) or, for full fine-tuning, a pipeline folder; the base defaults to the run's
  ``model.pretrained`` (and ``model.revision``);
* a LoRA folder (``pytorch_lora_weights.safetensors``, diffusers format) or a LoRA ``.safetensors`` file: applied
  to ``--base`` with ``load_lora_weights``;
* a pipeline folder (``model_index.json``: a merged export or any diffusers pipeline), compared with ``--base``.

Any text-to-image family the package trains (SD1.x/2.x, SDXL, SD3/SD3.5, FLUX.1) loads through
``DiffusionPipeline.from_pretrained`` and samples through the one ``generate()`` path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_CONFIG = "mmalign_config.yaml"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelPlan:
    """``base``: pipeline folder or hub id; ``kind``: ``lora`` (``lora`` applied to the base) or ``pipeline``
    (``aligned`` is a full pipeline)."""

    aligned: str
    base: str
    kind: str
    lora: str | None = None
    lora_weight_name: str | None = None
    base_revision: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"aligned": self.aligned, "aligned_kind": self.kind, "base": self.base, "lora": self.lora,
                "base_revision": self.base_revision}


def _run_config(folder: Path) -> dict[str, Any] | None:
    import yaml

    path = folder / RUN_CONFIG
    if not path.is_file():
        return None
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or not model.get("pretrained"):
        raise ValueError(f"{path}: no model.pretrained recorded")
    return raw


def _check_base(base: str) -> str:
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"--base {base}: not a diffusers pipeline folder (no model_index.json)")
        return str(path.resolve())
    if _HUB_ID.match(base) and not base.startswith((".", "/")):
        return base  # a hub id: from_pretrained finds it in the cache (offline) or downloads it
    raise FileNotFoundError(f"--base {base}: no such pipeline folder")


def resolve_models(aligned: str, base: str | None) -> ModelPlan:
    """The :class:`ModelPlan` for ``aligned`` / ``--base`` (module docstring); FileNotFoundError / ValueError
    naming the path when something is missing."""
    path = Path(aligned).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{aligned}: no such file or folder (give a run folder, a LoRA folder or file, or a "
                                "pipeline folder)")
    folder = path if path.is_dir() else path.parent
    run = _run_config(folder)
    recorded = run["model"] if run else {}
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{aligned}: a LoRA file must be .safetensors")
        kind, lora, weight = "lora", str(folder.resolve()), path.name
    elif (path / LORA_WEIGHT_NAME).is_file():
        kind, lora, weight = "lora", str(path.resolve()), LORA_WEIGHT_NAME
    elif (path / "model_index.json").is_file():
        kind, lora, weight = "pipeline", None, None
    elif run is not None:
        raise FileNotFoundError(f"{aligned}: a run folder without an exported model (no {LORA_WEIGHT_NAME} or "
                                "model_index.json); export a checkpoint first: mmalign export "
                                f"{aligned}/checkpoints/checkpoint-N --out DIR")
    else:
        raise FileNotFoundError(f"{aligned}: no LoRA ({LORA_WEIGHT_NAME}), no pipeline (model_index.json) and no "
                                f"run config ({RUN_CONFIG})")
    chosen = base or recorded.get("pretrained")
    if not chosen:
        raise ValueError(f"--base is required: {aligned} records no base model (no {RUN_CONFIG})")
    revision = recorded.get("revision") if not base else None
    return ModelPlan(aligned=str(path.resolve()), base=_check_base(str(chosen)), kind=kind, lora=lora,
                     lora_weight_name=weight, base_revision=revision)


def load_pipeline(source: str, *, dtype: str = "float32", device: str = "cpu", revision: str | None = None):
    """``DiffusionPipeline.from_pretrained(source)`` in ``dtype`` on ``device`` (no safety checker: the images
    are decoded by :func:`mmalign.diffusion.sampling.generate`, which never runs it), progress bar off."""
    import torch
    from diffusers import DiffusionPipeline

    from mmalign.diffusion.adapter import pipeline_load_kwargs

    kwargs = pipeline_load_kwargs(source, revision)
    if "safety_checker" in DiffusionPipeline.load_config(source, **{k: v for k, v in kwargs.items()
                                                                    if k == "revision"}):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=getattr(torch, dtype), **kwargs)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def apply_lora(pipe, plan: ModelPlan):
    """``pipe`` with the plan's LoRA loaded (``load_lora_weights``: UNet / transformer and text encoders)."""
    pipe.load_lora_weights(plan.lora, weight_name=plan.lora_weight_name)
    return pipe


def release_memory() -> None:
    """Collect dropped models and return their device memory."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


