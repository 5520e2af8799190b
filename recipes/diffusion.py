"""Text-to-image preference training: Diffusion-DPO, Diffusion-SFT, MaPO, DCPO, RankDPO, Diffusion-KTO.

    accelerate launch recipes/diffusion.py --config recipes/configs/diffusion/sd15_dpo.yaml [key=value ...]

SD1.x, SD2.x (v-prediction) and SDXL; LoRA (``lora.rank > 0``, reference = adapters disabled) or full fine-tuning
(``lora.rank=0``, reference = frozen copy). Formulas and defaults: ``mmalign.diffusion.methods`` and the spec.

Steps: parse and check the config (before any model loads) → read the data → load the pipeline → cache latents
and text embeddings → set up the UNet (LoRA / full, reference, speed options) → reference validation grid → the
shared training loop → export → toy-world evaluation (optional) → summary.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from accelerate.utils import set_seed

from mmalign.config import load_config
from mmalign.diffusion.adapter import load_parts
from mmalign.diffusion.build import LazyEMA, check_config, load_data, normalize_config, sampling_weights
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.diffusion.export import save_run_config
from mmalign.diffusion.inputs import InputBuilder
from mmalign.diffusion.methods import StepContext, make_step_fn
from mmalign.diffusion.reference import unwrap
from mmalign.diffusion.registry import method_spec
from mmalign.diffusion.validation import load_validation_scorer, render_grid
from mmalign.recipe_entry import run_recipe
from mmalign.resume_check import check_resume
from mmalign.run_lock import lock_run_folder
from mmalign.safe_export import export_or_keep_checkpoint
from mmalign.testing.placeholders import resolve_placeholders
from mmalign.toy.diffusion_eval import check_toy_eval, run_toy_eval
from mmalign.train import make_accelerator, train, write_summary
from mmalign.validate import check_batch_fits


def parse_args(argv: list[str] | None) -> tuple[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe YAML (recipes/configs/diffusion/*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    return args.config, overrides


def main(argv: list[str] | None = None) -> dict:
    # 1. Config: typed, unknown keys rejected, paths checked — all before any model is loaded.
    config_path, overrides = parse_args(argv)
    cfg = load_config(DiffusionRecipeConfig, config_path, overrides)
    normalize_config(cfg)
    output_dir = Path(cfg.output_dir)
    check_resume(cfg, output_dir)  # train.resume: the checkpoint's files and recorded shape keys, before anything
    if note := lock_run_folder(output_dir):  # one run per output folder, before anything is written there
        print(f"NOTE: {note}")
    accelerator = make_accelerator(cfg.train, output_dir)
    with accelerator.main_process_first():  # `tiny:` placeholders: other ranks reuse what the main process wrote
        for note in resolve_placeholders(cfg, output_dir / "tiny_inputs"):
            accelerator.print(f"NOTE: {note}")
    kind = check_config(cfg)
    method = method_spec(cfg.method.name)  # data kind, reference, step and hooks: mmalign/diffusion/registry.py
    check_toy_eval(cfg)
    if accelerator.is_main_process:
        save_run_config(cfg, output_dir)

    set_seed(cfg.train.seed)  # LoRA initialisation and the cache pass are reproducible too

    # 2. Data (validated records, lazy images) and the pipeline.
    dataset = load_data(cfg, kind)
    check_batch_fits(len(dataset), cfg.train.batch_size, accelerator.num_processes)
    if method.prepare:  # e.g. SmPO's scorer soft labels: computed once per data set, stored, reused
        method.hook("prepare")(cfg, dataset, accelerator)
    parts = load_parts(cfg.model.pretrained, cfg.model.revision, cfg.model.prediction_type)

    # 3. Training set: cached latents/text (first pass) or pixels encoded in the step.
    # 4. UNet: LoRA or full fine-tuning, reference provider, dtypes, attention/checkpointing/compile.
    train_set, collate_fn, skip_counter, data_stats = method.hook("training_set")(cfg, kind, dataset, parts, accelerator)
    unet, reference, applied = method.hook("setup_model")(cfg, parts, accelerator, data_stats)
    ema = LazyEMA(unet, cfg.export.ema_decay, accelerator) if cfg.export.ema else None

    # 5. The step: inputs → policy/reference errors → objective.
    inputs = InputBuilder(parts, cfg.data.resolution, cfg.data.latent_sample, cfg.method.empty_prompt_prob,
                          cfg.method.sdxl_time_ids)
    ctx = StepContext(parts, inputs, reference, cfg.method, accelerator.device, accelerator.autocast)
    method_step = make_step_fn(ctx, skip_counter)

    def step_fn(model, batch):
        if ema is not None:
            ema.before_micro_batch()
        return method_step(model, batch)

    # 6. Validation grids: the reference once now (policy == base), the policy every N steps and at the end.
    val = cfg.validation
    size = val.height or cfg.data.resolution

    scorer = load_validation_scorer(val, accelerator.device)

    def grid(name: str) -> dict:
        return render_grid(parts.pipeline, val.prompts, output_dir / "validation" / f"{name}.png", size=size,
                           steps=val.num_inference_steps, guidance=val.guidance_scale, seed=val.seed,
                           device=accelerator.device, autocast=accelerator.autocast, scorer=scorer)

    validate_fn, reference_validation = None, {}
    if val.prompts:
        if accelerator.is_main_process:
            reference_validation = grid("reference")

        def validate_fn(step: int) -> dict:
            return grid(f"step_{step:06d}") if accelerator.is_main_process else {}

    # 7. Train with the shared loop.
    summary = train(
        cfg.train, output_dir=output_dir, model=unet, dataset=train_set, step_fn=step_fn, collate_fn=collate_fn,
        accelerator=accelerator, validate_fn=validate_fn, validate_every=val.every, run_config=cfg.as_dict(),
        sample_weights=sampling_weights(cfg, train_set),
    )

    # 8. Export (and the summary fields).
    extra = {"method": cfg.method.name, "model": cfg.model.pretrained, "family": parts.family,
             "prediction_type": parts.prediction_type, "setup": applied, "data": {**dataset.summary(), **data_stats},
             "validation_reference": reference_validation, "note": cfg.note}
    if skip_counter is not None:
        extra["data"]["skips"] = skip_counter.as_dict()
    if ema is not None:
        ema.finish()
    if accelerator.is_main_process and cfg.export.enabled:
        export = method.hook("export")
        extra["export"] = str(export_or_keep_checkpoint(lambda: export(unwrap(unet), cfg, parts, output_dir),
                                                        accelerator, cfg.train, output_dir, summary))

    # 9. Toy world: the judge's score of base vs aligned on held-out captions, a table and a side-by-side grid.
    if accelerator.is_main_process and cfg.toy_eval.enabled:
        extra["toy_eval"] = run_toy_eval(cfg, parts.pipeline, unet, reference, output_dir,
                                         autocast=accelerator.autocast, print_fn=accelerator.print)
    if accelerator.is_main_process:
        write_summary(output_dir, extra)
    return {**summary, **extra}


if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
