"""VLM preference training: DPO family, mDPO, rDPO and MM-DPO on any image-text-to-text model.

    accelerate launch recipes/vlm.py --config recipes/configs/vlm/qwen2vl_dpo.yaml [key=value ...]

Reads top to bottom: config → model + processor (LoRA or full fine-tuning, vision side frozen) → rows →
collator → step function (policy/reference scores → mmalign.objectives) → the shared training loop → export
(peft adapter folder, optionally merged). Formulas: mmalign/mllm/vlm/objective.py.
"""

from __future__ import annotations

import argparse
import os

from accelerate.utils import set_seed

from mmalign.config import load_config, require_paths, to_dict
from mmalign.data.skipping import SkipCounter
from mmalign.data.vlm_rows import VLMPreferenceDataset
from mmalign.mllm.export import merge_adapter_folder, save_trained
from mmalign.mllm.model import load_vlm, prepare_policy
from mmalign.mllm.vlm.batch import VisionPreferenceCollator
from mmalign.mllm.vlm.config import VLMRecipeConfig
from mmalign.mllm.vlm.objective import check_method, needs_reference, preference_step, vlm_method
from mmalign.recipe_entry import run_recipe
from mmalign.resume_check import check_resume
from mmalign.run_lock import lock_run_folder
from mmalign.safe_export import export_or_keep_checkpoint
from mmalign.train import make_accelerator, train, write_summary
from mmalign.validate import check_batch_fits


def main(argv: list[str] | None = None) -> dict:
    # 1. Config: typed, unknown keys rejected, method and input files checked — all before any model is loaded.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (recipes/configs/vlm/*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(VLMRecipeConfig, args.config, overrides)
    require_paths(**{"model.pretrained": cfg.model.pretrained, "data.path": cfg.data.path})
    method = cfg.method
    check_method(method)
    spec = vlm_method(method.name)  # what the method needs of the data: mmalign/mllm/vlm/objective.py METHODS
    check_resume(cfg, cfg.output_dir)  # train.resume: the checkpoint's files and recorded shape keys
    if note := lock_run_folder(cfg.output_dir):  # one run per output folder
        print(f"NOTE: {note}")

    # 2. Data: rows (bad rows raise or are skipped and counted), read before the model so bad data fails fast.
    dataset = VLMPreferenceDataset(
        cfg.data.path, split=cfg.data.split, image_root=cfg.data.image_root,
        extra_image_field=cfg.data.extra_image_field, require_extra_image=spec.requires_extra_image,
        on_bad_row=cfg.data.on_bad_row, max_rows=cfg.data.max_rows, allow_outside_paths=cfg.data.allow_outside_paths,
    )
    check_batch_fits(len(dataset), cfg.train.batch_size, int(os.environ.get("WORLD_SIZE", "1")), "rows")

    # 3. Model: LoRA (reference = adapters off) or full fine-tuning (reference = frozen copy).
    set_seed(cfg.train.seed)  # before any random initialisation (LoRA A): two launches give the same weights
    model, processor = load_vlm(cfg.model)
    policy, ref_model = prepare_policy(model, cfg.model, cfg.lora, needs_reference=needs_reference(method))
    share_features = method.share_vision_features and cfg.model.freeze_vision

    # 4. The collator (chat template, masks, extra image) and the step: policy/reference scores → objective.
    collate = VisionPreferenceCollator(
        processor, max_length=cfg.data.max_length, on_overlong=cfg.data.on_overlong,
        extra=spec.collator_extra(cfg.data.extra_image_field),
        crop_scale=(method.crop_scale_min, method.crop_scale_max), seed=cfg.train.seed,
    )
    # one skip report: rows dropped at load (on_bad_row=skip) and images unreadable while training (counted)
    skips = SkipCounter(len(dataset), cfg.data.max_bad_fraction, what="rows")
    skips.note_dropped(dataset.skipped)

    accelerator = make_accelerator(cfg.train, cfg.output_dir)
    if ref_model is not None:
        ref_model.to(accelerator.device)

    def step_fn(model, batch):
        skips.update(batch)  # unreadable images: counted, stop past data.max_bad_fraction
        with accelerator.autocast():  # also covers the vision encoder and the reference copy
            return preference_step(model, batch, method, ref_model=ref_model, share_features=share_features)

    # 5. Train with the shared loop.
    summary = train(cfg.train, output_dir=cfg.output_dir, model=policy, dataset=dataset, step_fn=step_fn,
                    collate_fn=collate, accelerator=accelerator, run_config=to_dict(cfg))

    # 6. Export: peft adapter folder (or full model) + processor; optionally the merged full model.
    if accelerator.is_main_process:
        out = export_or_keep_checkpoint(
            lambda: save_trained(accelerator.unwrap_model(policy), processor, f"{cfg.output_dir}/{cfg.export.adapter_dir}"),
            accelerator, cfg.train, cfg.output_dir, summary)
        exported = {"adapter_dir": str(out)}
        if cfg.export.merge and cfg.lora.enabled:
            exported["merged_dir"] = str(merge_adapter_folder(out, f"{cfg.output_dir}/merged", base=cfg.model.pretrained))
        summary["export"] = exported
        summary["data"] = {"rows": len(dataset), "skips": skips.as_dict()}
        write_summary(cfg.output_dir, {"export": exported, "data": summary["data"]})
    return summary


if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
