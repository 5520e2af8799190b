"""Video LLM preference training: RRPO, TEMPLE (DPO curriculum + SFT), VDPO, and plain SFT.

    accelerate launch recipes/video.py --config recipes/configs/video/qwen25vl_temple.yaml [key=value ...]

Reads top to bottom: parse the config → load model and processor → build the dataset and the step of the
method → :func:`mmalign.train.train` → export → summary. With ``stages`` the run is a curriculum (TEMPLE): each
stage merges the previous LoRA, starts a fresh one (so the reference resets to the previous stage's policy) and
trains on its own file; finished stages are skipped on restart. Formulas: ``spec/vlm_video_objectives.md`` §2
(RRPO), §3 (TEMPLE), §7 (VDPO); code in :mod:`mmalign.objectives.rrpo`, :mod:`mmalign.mllm.video_steps`.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from mmalign.config import load_config, to_dict
from mmalign.mllm.curriculum import fresh_adapter, run_stages
from mmalign.mllm.export import merge_adapter
from mmalign.mllm.video_batch import VideoRowCollator
from mmalign.mllm.video_build import (
    build_dataset,
    build_step,
    check_inputs,
    load_video_llm,
    lora_for,
    stage_train_config,
    toy_accuracy,
)
from mmalign.mllm.video_config import StageConfig, VideoRecipeConfig
from mmalign.recipe_entry import run_recipe
from mmalign.reference import frozen_copy
from mmalign.run_lock import lock_run_folder
from mmalign.train import make_accelerator, train, write_summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (recipes/configs/video/*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(VideoRecipeConfig, args.config, overrides)
    check_inputs(cfg)  # methods and input files, before any model loads
    if note := lock_run_folder(cfg.output_dir):  # one run per output folder
        print(f"NOTE: {note}")

    model, processor = load_video_llm(cfg.model)
    collate = VideoRowCollator(processor, cfg.data.max_length)
    output_dir, is_main = Path(cfg.output_dir), PartialState().is_main_process
    acc_before = toy_accuracy(cfg, model, processor)

    def run_stage(stage_model: torch.nn.Module, stage: StageConfig, folder: Path) -> dict[str, Any]:
        dataset = build_dataset(cfg, stage.method, stage.data, processor)
        step = build_step(cfg, stage.method, None)  # reference = adapter off = previous stage
        result = train(stage_train_config(cfg, stage, len(dataset)), output_dir=folder, model=stage_model,
                       dataset=dataset, step_fn=step, collate_fn=collate, run_config=to_dict(cfg))
        return {**result, "data": {"rows": len(dataset), "skips": dataset.skips.as_dict()}}

    if cfg.stages:  # curriculum: a fresh LoRA per stage on the merged previous one
        model, stage_summaries = run_stages(model, cfg.stages, output_dir, run_stage, partial(lora_for, cfg),
                                            is_main_process=is_main)
        summary: dict[str, Any] = {"stages": stage_summaries}
    else:  # one run: LoRA (reference = adapter off) or full fine-tuning (reference = frozen copy)
        dataset = build_dataset(cfg, cfg.method.name, cfg.data.path, processor)
        if cfg.lora.enabled:
            model = fresh_adapter(model, lora_for(cfg))
        accelerator = make_accelerator(cfg.train, output_dir)
        ref_model = None
        if not cfg.lora.enabled and cfg.method.name != "sft":  # a frozen copy on the policy's device
            ref_model = frozen_copy(model, accelerator.device)
        summary = train(cfg.train, output_dir=output_dir, model=model, dataset=dataset,
                        step_fn=build_step(cfg, cfg.method.name, ref_model), collate_fn=collate,
                        accelerator=accelerator, run_config=to_dict(cfg))
        summary["data"] = {"rows": len(dataset), "skips": dataset.skips.as_dict()}
        if cfg.lora.enabled:  # export: the adapter folder, then the merged model for the toy metric
            if is_main:
                model.save_pretrained(str(output_dir / "adapter"))
            model = merge_adapter(model)
        elif is_main:  # full fine-tune: a complete model folder, loadable as model.pretrained
            model.save_pretrained(str(output_dir / "model"))
            processor.save_pretrained(str(output_dir / "model"))

    acc_after = toy_accuracy(cfg, model, processor)
    if acc_before is not None:
        summary["toy_direction_accuracy"] = {"before": acc_before, "after": acc_after}
        print(f"toy direction accuracy: before {acc_before:.3f}, after {acc_after:.3f}")
    if is_main:
        write_summary(output_dir, {k: v for k, v in summary.items() if k != "history"})
    summary["model"] = model
    return summary


if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
