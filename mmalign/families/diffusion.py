"""The diffusion family of :func:`mmalign.recipe.run`: Diffusion-DPO, SFT, MaPO, SmPO, InPO, DCPO, RankDPO,
Diffusion-KTO and PPD on SD1.x, SD2.x, SDXL, SD3/SD3.5 and FLUX.1.

What a method needs (data kind, reference, training set, UNet setup, export) comes from its registry entry
(:mod:`mmalign.diffusion.registry`), so nothing here branches on the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.recipe import Job, train_job


class Diffusion:
    """LoRA (``lora.rank > 0``, reference = adapters disabled) or full fine-tuning (reference = frozen copy)."""

    name = "diffusion"
    schema = DiffusionRecipeConfig

    def prepare_config(self, cfg: DiffusionRecipeConfig) -> None:
        from mmalign.diffusion.build import normalize_config

        normalize_config(cfg)

    def check(self, cfg: DiffusionRecipeConfig) -> None:
        from mmalign.diffusion.build import check_config
        from mmalign.toy.diffusion_eval import check_toy_eval

        check_config(cfg)
        check_toy_eval(cfg)

    def load_data(self, cfg: DiffusionRecipeConfig, accelerator: Any) -> Any:
        """Validated records with lazily decoded images."""
        from mmalign.diffusion.build import check_config, load_data

        return load_data(cfg, check_config(cfg))

    def load_model(self, cfg: DiffusionRecipeConfig, data: Any, accelerator: Any) -> dict[str, Any]:
        """A method's ``prepare`` hook (SmPO's scorer soft labels: once per data set, stored), the pipeline, the
        training set (cached latents/text or pixels), the UNet (LoRA / full) and the reference."""
        from mmalign.diffusion.adapter import load_parts
        from mmalign.diffusion.build import LazyEMA, check_config
        from mmalign.diffusion.registry import method_spec

        method = method_spec(cfg.method.name)
        if method.prepare:
            method.hook("prepare")(cfg, data, accelerator)
        parts = load_parts(cfg.model.pretrained, cfg.model.revision, cfg.model.prediction_type)
        train_set, collate_fn, skips, data_stats = method.hook("training_set")(cfg, check_config(cfg), data, parts,
                                                                               accelerator)
        unet, reference, applied = method.hook("setup_model")(cfg, parts, accelerator, data_stats)
        ema = LazyEMA(unet, cfg.export.ema_decay, accelerator) if cfg.export.ema else None
        return {"parts": parts, "train_set": train_set, "collate_fn": collate_fn, "skips": skips,
                "data_stats": data_stats, "unet": unet, "reference": reference, "applied": applied, "ema": ema}

    def make_job(self, cfg: DiffusionRecipeConfig, data: Any, built: dict[str, Any], accelerator: Any) -> Job:
        """The step (inputs → policy/reference errors → objective) and the validation grids: the reference once
        now (policy == base), the policy every ``validation.every`` steps and at the end."""
        from mmalign.diffusion.build import sampling_weights
        from mmalign.diffusion.inputs import InputBuilder
        from mmalign.diffusion.step_context import StepContext
        from mmalign.diffusion.step_fn import make_step_fn
        from mmalign.diffusion.validation import load_validation_scorer, render_grid

        parts, ema = built["parts"], built["ema"]
        inputs = InputBuilder(parts, cfg.data.resolution, cfg.data.latent_sample, cfg.method.empty_prompt_prob,
                              cfg.method.sdxl_time_ids)
        ctx = StepContext(parts, inputs, built["reference"], cfg.method, accelerator.device, accelerator.autocast)
        method_step = make_step_fn(ctx, built["skips"])

        def step_fn(model, batch):
            if ema is not None:
                ema.before_micro_batch()
            return method_step(model, batch)

        val, output_dir = cfg.validation, Path(cfg.output_dir)
        scorer = load_validation_scorer(val, accelerator.device)

        def grid(name: str) -> dict:
            return render_grid(parts.pipeline, val.prompts, output_dir / "validation" / f"{name}.png",
                               size=val.height or cfg.data.resolution, steps=val.num_inference_steps,
                               guidance=val.guidance_scale, seed=val.seed, device=accelerator.device,
                               autocast=accelerator.autocast, scorer=scorer)

        validate_fn, reference_validation = None, {}
        if val.prompts:
            if accelerator.is_main_process:
                reference_validation = grid("reference")

            def validate_fn(step: int) -> dict:
                return grid(f"step_{step:06d}") if accelerator.is_main_process else {}

        summary = {"method": cfg.method.name, "model": cfg.model.pretrained, "family": parts.family,
                   "prediction_type": parts.prediction_type, "setup": built["applied"],
                   "data": {**data.summary(), **built["data_stats"]}, "validation_reference": reference_validation,
                   "note": cfg.note}
        return Job(model=built["unet"], dataset=built["train_set"], step_fn=step_fn, collate_fn=built["collate_fn"],
                   sample_weights=sampling_weights(cfg, built["train_set"]), validate_fn=validate_fn,
                   validate_every=val.every, parts=built, summary=summary)

    def train(self, cfg: DiffusionRecipeConfig, job: Job, accelerator: Any) -> dict[str, Any]:
        return train_job(cfg, job, accelerator)

    def before_export(self, cfg: DiffusionRecipeConfig, job: Job, accelerator: Any) -> None:
        if job.parts["skips"] is not None:
            job.summary["data"]["skips"] = job.parts["skips"].as_dict()
        if job.parts["ema"] is not None:
            job.parts["ema"].finish()

    def export(self, cfg: DiffusionRecipeConfig, job: Job, output_dir: Path) -> dict[str, Any]:
        """LoRA: ``pytorch_lora_weights.safetensors``; full fine-tuning: a pipeline folder (the method's hook)."""
        from mmalign.diffusion.reference import unwrap
        from mmalign.diffusion.registry import method_spec

        export = method_spec(cfg.method.name).hook("export")
        return {"export": str(export(unwrap(job.model), cfg, job.parts["parts"], output_dir))}

    def evaluate(self, cfg: DiffusionRecipeConfig, job: Job, accelerator: Any) -> dict[str, Any]:
        """The toy world's judge on base vs aligned (held-out captions), a table and a side-by-side grid."""
        if not cfg.eval.enabled:
            return {}
        from mmalign.toy.diffusion_eval import run_toy_eval

        return {"toy_eval": run_toy_eval(cfg, job.parts["parts"].pipeline, job.model, job.parts["reference"],
                                         cfg.output_dir, autocast=accelerator.autocast, print_fn=accelerator.print)}
