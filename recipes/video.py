"""Video LLM preference training: RRPO, TEMPLE (DPO curriculum + SFT), VDPO, and plain SFT.

    accelerate launch recipes/video.py --config recipes/configs/video/qwen25vl_temple.yaml [key=value ...]

Steps: parse and check the config (before any model loads) → load model and processor → data and the step of the
method → the shared training loop → export → toy metric → summary.json. With ``stages`` the run is a curriculum
(TEMPLE): each stage merges the previous LoRA, starts a fresh one (so the reference resets to the previous stage's
policy) and trains on its own file; finished stages are skipped on restart. Formulas: ``spec/vlm_video_objectives.md``
§2 (RRPO), §3 (TEMPLE), §7 (VDPO); code in :mod:`mmalign.objectives.rrpo`, :mod:`mmalign.mllm.video.steps`.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from mmalign.config import load_config, to_dict
from mmalign.mllm.video.batch import VideoRowCollator
from mmalign.mllm.video.build import (
    build_dataset,
    build_reference,
    build_step,
    check_inputs,
    export_run,
    load_video_llm,
    lora_for,
    stage_train_config,
)
from mmalign.mllm.video.config import StageConfig, VideoRecipeConfig
from mmalign.mllm.video.curriculum import fresh_adapter, run_stages
from mmalign.recipe_entry import run_recipe
from mmalign.resume_check import check_resume
from mmalign.run_lock import lock_run_folder
from mmalign.testing.placeholders import resolve_placeholders
from mmalign.toy.video_eval import toy_accuracy
from mmalign.train import make_accelerator, train, write_summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # 1. Config: typed, unknown keys rejected, methods and input files checked — all before any model is loaded.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (recipes/configs/video/*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(VideoRecipeConfig, args.config, overrides)
    check_inputs(cfg)
    output_dir = Path(cfg.output_dir)
    check_resume(cfg, output_dir)  # train.resume: the checkpoint's files and recorded shape keys, before anything
    if note := lock_run_folder(output_dir):  # one run per output folder
        print(f"NOTE: {note}")
    accelerator = make_accelerator(cfg.train, output_dir)
    with accelerator.main_process_first():  # `tiny:` placeholders: other ranks reuse what the main process wrote
        for note in resolve_placeholders(cfg, output_dir / "tiny_inputs"):
            accelerator.print(f"NOTE: {note}")

    # 2. Model and processor (pad token set, dropout off), the collator, the toy metric of the base.
    set_seed(cfg.train.seed)  # before any random initialisation: two launches give the same weights
    model, processor = load_video_llm(cfg.model)
    collate = VideoRowCollator(processor, cfg.data.max_length)
    acc_before = toy_accuracy(cfg, model, processor)

    # 3.-5. Data and step of the method → the shared loop → export. A curriculum runs this once per stage.
    def run_stage(stage_model: torch.nn.Module, stage: StageConfig, folder: Path) -> dict[str, Any]:
        dataset = build_dataset(cfg, stage.method, stage.data, processor)
        step = build_step(cfg, stage.method, None)  # reference = adapter off = previous stage
        result = train(stage_train_config(cfg, stage, len(dataset)), output_dir=folder, model=stage_model,
                       dataset=dataset, step_fn=step, collate_fn=collate, run_config=to_dict(cfg))
        return {**result, "data": {"rows": len(dataset), "skips": dataset.skips.as_dict()}}

    if cfg.stages:  # curriculum: a fresh LoRA per stage on the merged previous one
        model, stage_summaries = run_stages(model, cfg.stages, output_dir, run_stage, partial(lora_for, cfg),
                                            is_main_process=accelerator.is_main_process)
        summary: dict[str, Any] = {"stages": stage_summaries}
    else:  # one run: LoRA (reference = adapter off) or full fine-tuning (reference = frozen copy)
        dataset = build_dataset(cfg, cfg.method.name, cfg.data.path, processor)
        if cfg.lora.enabled:
            model = fresh_adapter(model, lora_for(cfg))
        step = build_step(cfg, cfg.method.name, build_reference(cfg, model, accelerator.device))
        summary = train(cfg.train, output_dir=output_dir, model=model, dataset=dataset, step_fn=step,
                        collate_fn=collate, accelerator=accelerator, run_config=to_dict(cfg))
        summary["data"] = {"rows": len(dataset), "skips": dataset.skips.as_dict()}
        model = export_run(cfg, model, processor, accelerator, summary)

    # 6. Toy metric of the aligned model (when eval.toy_manifest is set) and the summary.
    if acc_before is not None:
        summary["toy_direction_accuracy"] = {"before": acc_before, "after": toy_accuracy(cfg, model, processor)}
        accelerator.print(f"toy direction accuracy: {summary['toy_direction_accuracy']}")
    if accelerator.is_main_process:
        write_summary(output_dir, {k: v for k, v in summary.items() if k != "history"})
    summary["model"] = model
    return summary


if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
