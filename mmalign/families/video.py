"""The video-LLM family of :func:`mmalign.recipe.run`: RRPO, TEMPLE (DPO curriculum + SFT), VDPO and plain SFT.

With ``stages`` the run is a curriculum (TEMPLE): each stage merges the previous LoRA, starts a fresh one (so the
reference resets to the previous stage's policy) and trains on its own file; finished stages are skipped on
restart (:mod:`mmalign.mllm.video.curriculum`). Formulas: ``spec/vlm_video_objectives.md`` §2 (RRPO), §3 (TEMPLE), §7
(VDPO); code in :mod:`mmalign.objectives.rrpo`, :mod:`mmalign.mllm.video.steps`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.recipe import Job, train_job


class Video:
    """One run (LoRA: reference = adapter off; full fine-tuning: frozen copy) or a curriculum of LoRA stages."""

    name = "video"
    schema = VideoRecipeConfig

    def prepare_config(self, cfg: VideoRecipeConfig) -> None:
        pass

    def check(self, cfg: VideoRecipeConfig) -> None:
        from mmalign.mllm.video.build import check_inputs

        check_inputs(cfg)

    def load_data(self, cfg: VideoRecipeConfig, accelerator: Any) -> Any:
        """Every row file parsed (a bad row fails before the model loads); the rows of a single run, or None for a
        curriculum (each stage reads its own file)."""
        from mmalign.data.video_rows import read_records

        for stage in cfg.stages:
            read_records(stage.data, cfg.data.media_root)
        if cfg.stages:
            return None
        records = read_records(cfg.data.path, cfg.data.media_root)
        return records[:cfg.data.max_rows] if cfg.data.max_rows else records

    def load_model(self, cfg: VideoRecipeConfig, data: Any, accelerator: Any) -> dict[str, Any]:
        """Model and processor (pad token set, dropout off); the toy metric of the base (main process)."""
        from mmalign.mllm.video.build import load_video_llm
        from mmalign.toy.video_eval import toy_accuracy

        model, processor = load_video_llm(cfg.model)
        before = toy_accuracy(cfg, model, processor) if accelerator.is_main_process else None
        return {"model": model, "processor": processor, "toy_before": before}

    def make_job(self, cfg: VideoRecipeConfig, data: Any, built: dict[str, Any], accelerator: Any) -> Job:
        """The collator and, for a single run, the data set and step of the method (LoRA attached or a frozen
        reference copy made); a curriculum builds both per stage in :meth:`train`."""
        from mmalign.mllm.video.batch import VideoRowCollator
        from mmalign.mllm.video.build import build_dataset, build_reference, build_step, lora_for
        from mmalign.mllm.video.curriculum import fresh_adapter

        model, processor = built["model"], built["processor"]
        collate = VideoRowCollator(processor, cfg.data.max_length)
        if cfg.stages:
            return Job(model=model, dataset=None, step_fn=None, collate_fn=collate, parts=built)
        dataset = build_dataset(cfg, cfg.method.name, cfg.data.path, processor, records=data)
        if cfg.lora.enabled:
            model = fresh_adapter(model, lora_for(cfg))
        step = build_step(cfg, cfg.method.name, build_reference(cfg, model, accelerator.device))
        return Job(model=model, dataset=dataset, step_fn=step, collate_fn=collate, parts=built,
                   summary={"data": {"rows": len(dataset)}})

    def train(self, cfg: VideoRecipeConfig, job: Job, accelerator: Any) -> dict[str, Any]:
        if not cfg.stages:
            return train_job(cfg, job, accelerator)
        from mmalign.mllm.video.build import build_dataset, build_step, lora_for, stage_train_config
        from mmalign.mllm.video.curriculum import run_stages

        processor = job.parts["processor"]

        def run_stage(stage_model, stage, folder: Path) -> dict[str, Any]:
            dataset = build_dataset(cfg, stage.method, stage.data, processor)
            stage_job = Job(model=stage_model, dataset=dataset, collate_fn=job.collate_fn,
                            step_fn=build_step(cfg, stage.method, None))  # reference = adapter off = previous stage
            result = train_job(cfg, stage_job, None, folder, stage_train_config(cfg, stage, len(dataset)))
            return {**result, "data": {"rows": len(dataset), "skips": dataset.skips.as_dict()}}

        job.model, stages = run_stages(job.model, cfg.stages, cfg.output_dir, run_stage, partial(lora_for, cfg),
                                       is_main_process=accelerator.is_main_process)
        return {"stages": stages}

    def before_export(self, cfg: VideoRecipeConfig, job: Job, accelerator: Any) -> None:
        if job.dataset is not None:
            job.summary["data"]["skips"] = job.dataset.skips.as_dict()

    def export(self, cfg: VideoRecipeConfig, job: Job, output_dir: Path) -> dict[str, Any]:
        """The peft adapter (LoRA) or the full model (full fine-tuning; a curriculum's merged stages), with the
        processor: a folder loadable as ``model.pretrained``."""
        from mmalign.mllm.export import save_trained

        return {"export": {"dir": str(save_trained(job.model, job.parts["processor"], output_dir))}}

    def evaluate(self, cfg: VideoRecipeConfig, job: Job, accelerator: Any) -> dict[str, Any]:
        """The toy metric of the aligned model (adapter merged) when ``eval.toy_manifest`` is set."""
        from mmalign.mllm.export import merge_adapter
        from mmalign.toy.video_eval import toy_accuracy

        job.model = merge_adapter(job.model)
        before = job.parts["toy_before"]
        if before is None:
            return {}
        result = {"before": before, "after": toy_accuracy(cfg, job.model, job.parts["processor"])}
        accelerator.print(f"toy direction accuracy: {result}")
        return {"toy_direction_accuracy": result}
