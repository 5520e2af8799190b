"""The VLM family of :func:`mmalign.recipe.run`: the DPO family, mDPO, rDPO and MM-DPO on any image-text-to-text
model. What a method needs of the data and the collator comes from its table entry (``mllm/vlm/objective.py`` METHODS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign.mllm.vlm.config import VLMRecipeConfig
from mmalign.recipe import Job, train_job


class VLM:
    """LoRA (reference = adapters off) or full fine-tuning (reference = frozen copy); vision side frozen by
    default."""

    name = "vlm"
    schema = VLMRecipeConfig

    def prepare_config(self, cfg: VLMRecipeConfig) -> None:
        """Method, loss kind and beta mode known (before the output folder is locked)."""
        from mmalign.mllm.vlm.objective import check_method

        check_method(cfg.method)

    def check(self, cfg: VLMRecipeConfig) -> None:
        from mmalign.config import require_paths

        require_paths(**{"model.pretrained": cfg.model.pretrained, "data.path": cfg.data.path})

    def load_data(self, cfg: VLMRecipeConfig, accelerator: Any) -> Any:
        """Rows (bad rows raise or are skipped and counted), read before the model so bad data fails fast."""
        from mmalign.data.vlm_rows import VLMPreferenceDataset
        from mmalign.mllm.vlm.objective import vlm_method

        data = cfg.data
        return VLMPreferenceDataset(
            data.path, split=data.split, image_root=data.media_root, extra_image_field=data.extra_image_field,
            require_extra_image=vlm_method(cfg.method.name).requires_extra_image, on_bad_row=data.on_bad_row,
            max_rows=data.max_rows, allow_outside_paths=data.allow_outside_paths,
        )

    def load_model(self, cfg: VLMRecipeConfig, data: Any, accelerator: Any) -> dict[str, Any]:
        from mmalign.mllm.model import load_vlm, prepare_policy
        from mmalign.mllm.vlm.objective import needs_reference

        model, processor = load_vlm(cfg.model)
        policy, ref_model = prepare_policy(model, cfg.model, cfg.lora, needs_reference=needs_reference(cfg.method))
        if ref_model is not None:
            ref_model.to(accelerator.device)
        return {"policy": policy, "reference": ref_model, "processor": processor}

    def make_job(self, cfg: VLMRecipeConfig, data: Any, built: dict[str, Any], accelerator: Any) -> Job:
        """The collator (chat template, masks, extra image) and the step: policy/reference scores → objective."""
        from mmalign.data.skipping import SkipCounter
        from mmalign.mllm.vlm.batch import VisionPreferenceCollator
        from mmalign.mllm.vlm.objective import preference_step, vlm_method

        method, ref_model = cfg.method, built["reference"]
        share_features = method.share_vision_features and cfg.model.freeze_vision
        collate = VisionPreferenceCollator(
            built["processor"], max_length=cfg.data.max_length, on_overlong=cfg.data.on_overlong,
            extra=vlm_method(method.name).collator_extra(cfg.data.extra_image_field),
            crop_scale=(method.mdpo.crop_scale_min, method.mdpo.crop_scale_max), seed=cfg.train.seed,
        )
        # one skip report: rows dropped at load (on_bad_row=skip) and images unreadable while training (counted)
        skips = SkipCounter(len(data), cfg.data.max_bad_fraction, what="rows")
        skips.note_dropped(data.skipped)

        def step_fn(model, batch):
            skips.update(batch)  # unreadable images: counted, stop past data.max_bad_fraction
            with accelerator.autocast():  # also covers the vision encoder and the reference copy
                return preference_step(model, batch, method, ref_model=ref_model, share_features=share_features)

        return Job(model=built["policy"], dataset=data, step_fn=step_fn, collate_fn=collate,
                   parts={**built, "skips": skips}, summary={"data": {"rows": len(data)}})

    def train(self, cfg: VLMRecipeConfig, job: Job, accelerator: Any) -> dict[str, Any]:
        return train_job(cfg, job, accelerator)

    def before_export(self, cfg: VLMRecipeConfig, job: Job, accelerator: Any) -> None:
        job.summary["data"]["skips"] = job.parts["skips"].as_dict()
        job.model = accelerator.unwrap_model(job.model)

    def export(self, cfg: VLMRecipeConfig, job: Job, output_dir: Path) -> dict[str, Any]:
        """The peft adapter (LoRA) or the full model, with the processor; ``export.merge``: also ``merged/``."""
        from mmalign.mllm.export import merge_adapter_folder, save_trained

        out = save_trained(job.model, job.parts["processor"], output_dir)
        exported = {"dir": str(out)}
        if cfg.export.merge and cfg.lora.enabled:
            exported["merged_dir"] = str(merge_adapter_folder(out, output_dir / "merged", base=cfg.model.pretrained))
        return {"export": exported}

    def evaluate(self, cfg: VLMRecipeConfig, job: Job, accelerator: Any) -> dict[str, Any]:
        return {}
