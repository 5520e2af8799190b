"""Video LLM preference training: RRPO, TEMPLE (DPO curriculum + SFT), VDPO, and plain SFT.

    accelerate launch recipes/video.py --config recipes/configs/video/qwen25vl_temple.yaml [key=value ...]

Reads top to bottom: parse the config → load model and processor → build the dataset and the step of the
method → :func:`mmalign.train.train`. With ``stages`` the run is a curriculum (TEMPLE): each stage merges the
previous LoRA, starts a fresh one (so the reference resets to the previous stage's policy) and trains on its own
file; finished stages are skipped on restart. Formulas: ``spec/vlm_video_objectives.md`` §2 (RRPO), §3 (TEMPLE),
§7 (VDPO); code in :mod:`mmalign.objectives.rrpo`, :mod:`mmalign.mllm.video_steps`.
"""


import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from mmalign.config import MISSING, ConfigError, load_config, require_paths, to_dict
from mmalign.mllm.curriculum import LoraSettings, fresh_adapter, merge_adapter, run_stages
from mmalign.mllm.temporal import KINDS
from mmalign.mllm.video_batch import VideoRowCollator
from mmalign.mllm.video_data import METHODS, VideoPreferenceDataset, read_records
from mmalign.mllm.video_io import VideoSampling
from mmalign.mllm.video_steps import make_pair_step, make_rrpo_step, sft_step
from mmalign.objectives import PREFERENCE_KINDS
from mmalign.objectives.rrpo import rrpo_defaults
from mmalign.recipe_entry import run_recipe
from mmalign.reference import frozen_copy
from mmalign.run_lock import lock_run_folder
from mmalign.train import TrainConfig, make_accelerator, train, write_summary
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check


@dataclass
class ModelConfig:
    pretrained: str = MISSING
    """Local folder or hub id of an ``AutoModelForImageTextToText`` + processor; ``tiny:qwen2vl`` /
    ``tiny:qwen25vl`` builds a tiny random-weight model in-process (smoke tests); ``tiny:qwen2vl-toy`` is the
    variant the toy video configs train (M-RoPE base 10, :data:`mmalign.mllm.tiny_video.TOY_VARIANT`)."""
    family: str = "qwen25vl"
    """Model family for RRPO's per-model alpha/beta defaults: llava_video, longvu, videochat2 (others: default)."""
    dtype: str = "float32"
    """float32 | bfloat16 | float16 weights."""
    attn_implementation: str | None = None
    """``sdpa`` / ``flash_attention_2`` / ``eager``; None keeps the transformers default."""
    trust_remote_code: bool = False
    """Only for checkpoints that need custom code (off by default)."""
    lora: bool = True
    """Train a LoRA adapter (reference = adapter disabled); False = full fine-tune with a frozen copy as reference."""
    lora_r: int = 32
    """LoRA rank (TEMPLE: 32; RRPO: 128)."""
    lora_alpha: int = 64
    """LoRA alpha (TEMPLE DPO: 64; RRPO: 256)."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_target: str = "all-linear"
    """peft target modules; ``all-linear`` = every linear layer of the language model."""
    train_vision: bool = False
    """Adapt / train the vision tower too (frozen by default)."""


@dataclass
class MethodConfig:
    name: str = "dpo"
    """rrpo | dpo (TEMPLE stages) | vdpo | sft."""
    beta: float | None = None
    """Inverse temperature; None = RRPO per-model default, else 0.1."""
    alpha: float | None = None
    """RRPO token-KL weight; None = per-model default."""
    loss_type: str = "sigmoid"
    """Preference loss of ``dpo``/``vdpo`` (any kind of ``mmalign.objectives.preference_loss``)."""
    sft_weight: float = 0.0
    """Weight of the token-mean NLL of chosen rows added to dpo/vdpo (TEMPLE's ms-swift rpo_alpha = 1.0)."""
    perturbations: list[str] = field(default_factory=lambda: ["reverse", "shuffle"])
    """VDPO: temporal perturbations drawn per example for the rejected video."""
    magnitude: int = 16
    """VDPO: perturbation magnitude (16, 8, 4, 2)."""
    frames_per_clip: int = 2
    """Frames per perturbation unit (2 keeps Qwen-VL temporal patches intact)."""
    kl_chunk_size: int = 256
    """RRPO: token positions per chunk of the KL computation."""


@dataclass
class DataConfig:
    train: str = ""
    """jsonl file of rows (formats in ``mmalign.mllm.video_data``); stages name their own files."""
    video_root: str | None = None
    """Folder relative video paths are resolved against (default: the jsonl file's folder)."""
    max_length: int = 4096
    """Max tokens per sequence; only completions are truncated, never visual tokens."""
    on_error: str = "raise"
    """raise | skip: what an unreadable video does."""
    max_skip_fraction: float = 0.1
    """Stop when more than this fraction of rows is skipped."""


@dataclass
class StageConfig:
    name: str = MISSING
    """Stage name (folder ``<output_dir>/<NN>-<name>``)."""
    method: str = "dpo"
    """dpo | sft | vdpo | rrpo."""
    data: str = MISSING
    """jsonl file of this stage."""
    epochs: float = 1.0
    """Passes over the stage's data (TEMPLE: 1); ignored when ``max_steps`` > 0."""
    max_steps: int = 0
    """Optimizer steps (0: derived from ``epochs``)."""
    lr: float | None = None
    """Stage learning rate (None: ``train.lr``)."""
    lora_r: int | None = None
    """Stage LoRA rank (None: ``model.lora_r``)."""
    lora_alpha: int | None = None
    """Stage LoRA alpha (None: ``model.lora_alpha``)."""
    train_vision: bool | None = None
    """Stage vision-tower training (TEMPLE SFT: true; None: ``model.train_vision``)."""


@dataclass
class EvalConfig:
    toy_manifest: str | None = None
    """Toy video manifest: report forced-choice direction accuracy before and after training."""
    split: str = "test"
    """Manifest split to evaluate."""


@dataclass
class VideoRecipeConfig:
    output_dir: str = MISSING
    """Run folder: checkpoints, stage folders, adapter, summary.json."""
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    video: VideoSampling = field(default_factory=VideoSampling)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[StageConfig] = field(default_factory=list)
    """Curriculum stages, run in order (empty: one run of ``method`` on ``data.train``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)


# Ranges and choices, checked by load_config before any model loads (mmalign.validate).
register(ModelConfig, dtype=OneOf("float32", "bfloat16", "float16"), lora_r=Range(1), lora_alpha=Range(0, low_open=True),
         lora_dropout=Range(0, 1, high_open=True))
register(MethodConfig, name=OneOf(*METHODS), beta=Range(0, low_open=True), alpha=Range(0),
         loss_type=OneOf(*PREFERENCE_KINDS), sft_weight=Range(0), perturbations=OneOf(*KINDS), magnitude=Range(1),
         frames_per_clip=Range(1), kl_chunk_size=Range(1))
register(DataConfig, max_length=Range(1), on_error=OneOf("raise", "skip"), max_skip_fraction=Range(0, 1))
register(StageConfig, method=OneOf(*METHODS), epochs=Range(0, low_open=True), max_steps=Range(0),
         lr=Range(0, low_open=True), lora_r=Range(1), lora_alpha=Range(0, low_open=True))
register_check(VideoRecipeConfig, lambda c: output_dir_problem(c.output_dir))


def load_model(cfg: ModelConfig) -> tuple[torch.nn.Module, Any]:
    if cfg.pretrained.startswith("tiny:"):
        from mmalign.mllm.tiny_video import build_tiny_video_llm

        return build_tiny_video_llm(cfg.pretrained.split(":", 1)[1])
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs: dict[str, Any] = {"dtype": getattr(torch, cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(cfg.pretrained, **kwargs)
    processor = AutoProcessor.from_pretrained(cfg.pretrained, trust_remote_code=cfg.trust_remote_code)
    return model, processor


def build_dataset(cfg: VideoRecipeConfig, method: str, path: str, processor) -> VideoPreferenceDataset:
    records = read_records(path, cfg.data.video_root)
    return VideoPreferenceDataset(
        records, method, cfg.video, tokenizer=processor.tokenizer, perturbations=cfg.method.perturbations,
        magnitude=cfg.method.magnitude, frames_per_clip=cfg.method.frames_per_clip, seed=cfg.train.seed,
        on_error=cfg.data.on_error, max_skip_fraction=cfg.data.max_skip_fraction,
    )


def build_step(cfg: VideoRecipeConfig, method: str, ref_model: torch.nn.Module | None):
    defaults = rrpo_defaults(cfg.model.family)
    if method == "sft":
        return sft_step
    if method == "rrpo":
        beta = cfg.method.beta if cfg.method.beta is not None else defaults["beta"]
        alpha = cfg.method.alpha if cfg.method.alpha is not None else defaults["alpha"]
        return make_rrpo_step(beta, alpha, ref_model, cfg.method.kl_chunk_size)
    beta = cfg.method.beta if cfg.method.beta is not None else 0.1
    return make_pair_step(beta, cfg.method.loss_type, cfg.method.sft_weight, ref_model)


def toy_accuracy(cfg: VideoRecipeConfig, model: torch.nn.Module, processor) -> float | None:
    if not cfg.eval.toy_manifest:
        return None
    from mmalign.mllm.toy_eval import direction_accuracy
    from mmalign.mllm.toy_videos import load_manifest
    from mmalign.mllm.video_io import read_video

    rows = load_manifest(cfg.eval.toy_manifest, cfg.eval.split)
    clips = [(read_video(r["video"], cfg.video).frames, r["questions"][0]["question"]) for r in rows]
    return direction_accuracy(model, processor, clips, [r["direction"] for r in rows])


def steps_for(stage: StageConfig, n_items: int, tcfg: TrainConfig) -> int:
    if stage.max_steps > 0:
        return stage.max_steps
    return max(1, math.ceil(n_items * stage.epochs / (tcfg.batch_size * tcfg.grad_accum)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        config_path = argv[i + 1]
        del argv[i:i + 2]
    cfg = load_config(VideoRecipeConfig, config_path, argv)
    methods = [cfg.method.name] + [s.method for s in cfg.stages]
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"method '{m}' is not one of {', '.join(METHODS)}")
    if not cfg.model.pretrained.startswith("tiny:"):
        require_paths(**{"model.pretrained": cfg.model.pretrained})
    if cfg.stages:
        require_paths(**{f"stages.{i}.data": s.data for i, s in enumerate(cfg.stages)})
    else:
        require_paths(**{"data.train": cfg.data.train})

    if note := lock_run_folder(cfg.output_dir):  # one run per output folder
        print(f"NOTE: {note}")
    model, processor = load_model(cfg.model)
    collate = VideoRowCollator(processor, cfg.data.max_length)
    output_dir = Path(cfg.output_dir)
    acc_before = toy_accuracy(cfg, model, processor)

    def lora_for(stage: StageConfig | None) -> LoraSettings:
        return LoraSettings(
            r=(stage.lora_r if stage and stage.lora_r else cfg.model.lora_r),
            alpha=(stage.lora_alpha if stage and stage.lora_alpha else cfg.model.lora_alpha),
            dropout=cfg.model.lora_dropout, target_modules=cfg.model.lora_target,
            train_vision=(stage.train_vision if stage and stage.train_vision is not None else cfg.model.train_vision),
            seed=cfg.train.seed,
        )

    def run_stage(stage_model: torch.nn.Module, stage: StageConfig, folder: Path) -> dict[str, Any]:
        dataset = build_dataset(cfg, stage.method, stage.data, processor)
        tcfg = dataclasses.replace(cfg.train, max_steps=steps_for(stage, len(dataset), cfg.train),
                                   lr=stage.lr if stage.lr is not None else cfg.train.lr)
        step = build_step(cfg, stage.method, None)  # reference = adapter off = previous stage
        return train(tcfg, output_dir=folder, model=stage_model, dataset=dataset, step_fn=step,
                     collate_fn=collate, run_config=to_dict(cfg))

    if cfg.stages:
        model, stage_summaries = run_stages(model, cfg.stages, output_dir, run_stage, lora_for)
        summary: dict[str, Any] = {"stages": stage_summaries}
    else:
        dataset = build_dataset(cfg, cfg.method.name, cfg.data.train, processor)
        ref_model = None
        if cfg.model.lora:
            model = fresh_adapter(model, lora_for(None))
        accelerator = make_accelerator(cfg.train, output_dir)
        if not cfg.model.lora and cfg.method.name != "sft":  # full fine-tuning: a frozen copy on the policy's device
            ref_model = frozen_copy(model, accelerator.device)
        step = build_step(cfg, cfg.method.name, ref_model)
        summary = train(cfg.train, output_dir=output_dir, model=model, dataset=dataset, step_fn=step,
                        collate_fn=collate, accelerator=accelerator, run_config=to_dict(cfg))
        summary["data_dropped"] = len(dataset.report.dropped)
        if cfg.model.lora:
            if accelerator.is_main_process:
                model.save_pretrained(str(output_dir / "adapter"))
            model = merge_adapter(model)
        elif accelerator.is_main_process:  # full fine-tune: a complete model folder, loadable as model.pretrained
            model.save_pretrained(str(output_dir / "model"))
            processor.save_pretrained(str(output_dir / "model"))
    acc_after = toy_accuracy(cfg, model, processor)
    if acc_before is not None:
        summary["toy_direction_accuracy"] = {"before": acc_before, "after": acc_after}
        print(f"toy direction accuracy: before {acc_before:.3f}, after {acc_after:.3f}")
    if PartialState().is_main_process:
        write_summary(output_dir, {k: v for k, v in summary.items() if k != "history"})
    summary["model"] = model
    return summary


if __name__ == "__main__":
    raise SystemExit(run_recipe(main))
