"""Export a trained diffusion model: LoRA file, full pipeline, or a merged pipeline from a checkpoint.

* LoRA run → ``<out>/pytorch_lora_weights.safetensors`` (diffusers format + adapter metadata, :mod:`.lora`);
* full fine-tune → a complete pipeline folder: the base pipeline re-read from ``model.pretrained`` (original
  dtypes) with the trained denoiser (``unet``, or ``transformer`` for SD3 / FLUX);
* :func:`export_checkpoint` (``mmalign export``): a training checkpoint (``trainable.safetensors``) or a run folder
  → LoRA file, or with ``merge=True`` a complete pipeline with the LoRA folded into the UNet weights.

The run's resolved config is saved as ``<output_dir>/mmalign_config.yaml`` by the recipe; export reads it to know
the base model and the LoRA settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from mmalign import checkpoint as ckpt
from mmalign.config import load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.diffusion.lora import LORA_WEIGHT_NAME, add_lora, merge_lora, save_lora

RUN_CONFIG = "mmalign_config.yaml"


def save_run_config(cfg: DiffusionRecipeConfig, output_dir: str | os.PathLike) -> Path:
    path = Path(output_dir) / RUN_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
    return path


def export_trained(unet, pipeline_class: type, source: str, out_dir: str | os.PathLike, use_lora: bool) -> Path:
    """Final export of a run (see module docstring); returns the written file or folder."""
    if use_lora:
        return save_lora(unet, pipeline_class, out_dir)
    from mmalign.diffusion.adapter import pipeline_load_kwargs

    pipe = pipeline_class.from_pretrained(source, **pipeline_load_kwargs(source))
    name = denoiser_name(pipe)
    unet_dtype = getattr(pipe, name).dtype
    pipe.register_modules(**{name: unet.to("cpu", unet_dtype)})
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)


def export_model(unet, cfg: DiffusionRecipeConfig, parts, out_dir: str | os.PathLike) -> Path:
    """The registry's default ``export`` hook: :func:`export_trained` of the (unwrapped) trained UNet."""
    return export_trained(unet, parts.pipeline_class, cfg.model.pretrained, out_dir, use_lora=cfg.lora.rank > 0)


def denoiser_name(pipe) -> str:
    """``unet`` or ``transformer``: the pipeline component that is trained."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def _find_run(checkpoint: Path) -> tuple[Path, Path | None]:
    """``(run_dir, checkpoint_dir or None)`` for a checkpoint folder or a run output folder."""
    if (checkpoint / ckpt.TRAINABLE_FILE).is_file():
        for parent in [checkpoint.parent.parent, checkpoint.parent, checkpoint]:
            if (parent / RUN_CONFIG).is_file():
                return parent, checkpoint
        raise FileNotFoundError(f"{checkpoint}: no {RUN_CONFIG} found in the run folder above it")
    if (checkpoint / RUN_CONFIG).is_file():
        if (checkpoint / LORA_WEIGHT_NAME).is_file() or (checkpoint / "model_index.json").is_file():
            return checkpoint, None
        latest = ckpt.latest_checkpoint(checkpoint)
        if latest is None:
            raise FileNotFoundError(f"{checkpoint}: neither an exported model nor a checkpoint")
        return checkpoint, latest
    raise FileNotFoundError(f"{checkpoint} is neither a training checkpoint (no {ckpt.TRAINABLE_FILE}) nor a run "
                            f"folder (no {RUN_CONFIG})")


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, merge: bool = False) -> Path:
    """Load the base pipeline, apply the trained weights of ``checkpoint`` and write ``out_dir``."""
    from diffusers import DiffusionPipeline

    run_dir, ckpt_dir = _find_run(Path(checkpoint))
    recorded = ckpt_dir / ckpt.RUN_CONFIG_FILE if ckpt_dir is not None else None
    # the config the checkpoint was trained with (a later launch into the same folder may have rewritten RUN_CONFIG)
    cfg = load_config(DiffusionRecipeConfig, recorded if recorded and recorded.is_file() else run_dir / RUN_CONFIG)
    if ckpt_dir is not None:
        ckpt.check_trainable_file(ckpt_dir)  # one line naming the file, before the base pipeline loads
    from mmalign.diffusion.adapter import pipeline_load_kwargs

    pipe = DiffusionPipeline.from_pretrained(cfg.model.pretrained, **pipeline_load_kwargs(cfg.model.pretrained))
    use_lora = cfg.lora.rank > 0
    if ckpt_dir is None and use_lora:
        pipe.load_lora_weights(str(run_dir))
    elif ckpt_dir is None:
        pipe = DiffusionPipeline.from_pretrained(str(run_dir), **pipeline_load_kwargs(str(run_dir)))
    else:
        model = getattr(pipe, denoiser_name(pipe))
        if use_lora:
            add_lora(model, cfg.lora)
        else:
            model.requires_grad_(True)
        ckpt.load_trainable(model, ckpt_dir)
        model.to(torch.float32)
    out = Path(out_dir)
    model = getattr(pipe, denoiser_name(pipe))
    if use_lora and not merge:
        if ckpt_dir is None:
            raise ValueError(f"{run_dir} already holds the exported LoRA; use --merge for a merged pipeline")
        return save_lora(model, type(pipe), out)
    if use_lora:
        merge_lora(model)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out
