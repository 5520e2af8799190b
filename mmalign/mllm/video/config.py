"""Typed config of ``recipes/video.py`` (loaded with :func:`mmalign.config.load_config`): RRPO, TEMPLE (DPO
curriculum + SFT), VDPO and plain SFT on video LLMs. Ranges and choices are checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mmalign.choices import ON_BAD_ROW, PREFERENCE_KINDS
from mmalign.config import MISSING
from mmalign.data.video_io import VideoSampling
from mmalign.lora_config import LoraConfig, is_false, migrate_lora_block, video_lora
from mmalign.mllm.video.methods import METHODS, check_method_keys
from mmalign.mllm.video.temporal import KINDS
from mmalign.train_config import TrainConfig
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check


@dataclass
class ModelConfig:
    pretrained: str = MISSING
    """Local folder or hub id of an ``AutoModelForImageTextToText`` + processor; ``tiny:qwen2vl`` /
    ``tiny:qwen25vl`` / ``tiny:llavaov``: a tiny random-weight model saved under ``<output_dir>/tiny_inputs`` (smoke
    tests, :mod:`mmalign.testing.placeholders`); ``tiny:qwen2vl-toy`` is the
    variant the toy video configs train (M-RoPE base 10, :data:`mmalign.testing.tiny_video.TOY_VARIANT`)."""
    family: str = "qwen25vl"
    """Model family for RRPO's per-model alpha/beta defaults: llava_video, longvu, videochat2 (others: default)."""
    dtype: str = "float32"
    """float32 | bfloat16 | float16 weights."""
    attn_implementation: str | None = None
    """``sdpa`` / ``flash_attention_2`` / ``eager``; None keeps the transformers default."""
    trust_remote_code: bool = False
    """Only for checkpoints that need custom code (off by default)."""
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
    label_smoothing: float = 0.0
    """dpo/vdpo: eps of loss_type cdpo / robust / simpo (main could not set it: they ran with 0)."""
    gamma: float = 0.0
    """dpo/vdpo: SimPO target margin (loss_type simpo)."""
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
    path: str = ""
    """jsonl file of rows (formats in ``mmalign.data.video_rows``); stages name their own files."""
    video_root: str | None = None
    """Folder relative video paths are resolved against (default: the jsonl file's folder)."""
    max_length: int = 4096
    """Max tokens per sequence; only completions are truncated, never visual tokens."""
    on_bad_row: str = "error"
    """error | skip (the same key in every family): a row whose video cannot be decoded stops the run, or is
    dropped and reported in summary.json["data"]["skips"]."""
    max_bad_fraction: float = 0.1
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
    lora_rank: int | None = None
    """Stage LoRA rank (None: ``lora.rank``)."""
    lora_alpha: float | None = None
    """Stage LoRA alpha (None: ``lora.alpha``)."""
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
    lora: LoraConfig = field(default_factory=video_lora)
    """The shared LoRA block (:mod:`mmalign.lora_config`); ``rank: 0`` = full fine-tuning (frozen reference copy).
    Curriculum stages always train LoRA adapters."""
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    video: VideoSampling = field(default_factory=VideoSampling)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[StageConfig] = field(default_factory=list)
    """Curriculum stages, run in order (empty: one run of ``method`` on ``data.path``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)

    @staticmethod
    def renamed_key(old: str, raw: dict) -> str | None:
        """Keys renamed in the one-core release (read for one release)."""
        parts = old.split(".")
        if len(parts) == 3 and parts[0] == "stages" and parts[2] == "lora_r":
            return f"stages.{parts[1]}.lora_rank"
        return _RENAMED.get(old)

    @staticmethod
    def migrate(raw: dict) -> list[tuple[str, str]]:
        """Old values: ``model.lora: false`` → ``lora.rank: 0``; ``data.on_error: raise|skip`` →
        ``data.on_bad_row: error|skip``; ``stages[i].lora_r`` → ``lora_rank``; the ``lora:`` block's old forms."""
        return [*_migrate_video(raw), *migrate_lora_block(raw)]

    @staticmethod
    def check_given(cfg: VideoRecipeConfig, given: set[str]) -> None:
        """A ``method.*`` key no method of the run reads is a ConfigError (:mod:`mmalign.mllm.video.methods`)."""
        shared = tuple(f.name for f in fields(MethodConfig) if f.name != "name")
        check_method_keys([s.method for s in cfg.stages] or [cfg.method.name], given, shared)


_RENAMED = {"model.lora_r": "lora.rank", "model.lora_alpha": "lora.alpha", "model.lora_dropout": "lora.dropout",
            "model.lora_target": "lora.target_modules", "data.train": "data.path",
            "data.max_skip_fraction": "data.max_bad_fraction"}


def _migrate_video(raw: dict) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    model, data = raw.get("model"), raw.get("data")
    if isinstance(model, dict) and "lora" in model:
        if is_false(model.pop("lora")):
            raw.setdefault("lora", {})["rank"] = 0
        notes.append(("model.lora", "lora.rank (0 = full fine-tuning, > 0 = LoRA)"))
        if not model:
            raw.pop("model")
    if isinstance(data, dict) and "on_error" in data:
        value = data.pop("on_error")
        data["on_bad_row"] = {"raise": "error"}.get(value, value)
        notes.append(("data.on_error", "data.on_bad_row (raise is now error)"))
    for i, stage in enumerate(raw.get("stages") or []):
        if isinstance(stage, dict) and "lora_r" in stage:
            stage["lora_rank"] = stage.pop("lora_r")
            notes.append((f"stages.{i}.lora_r", f"stages.{i}.lora_rank"))
    return notes



# Ranges and choices, checked by load_config before any model loads (mmalign.validate).
register(ModelConfig, dtype=OneOf("float32", "bfloat16", "float16"))
register(MethodConfig, name=OneOf(*METHODS), beta=Range(0, low_open=True), alpha=Range(0),
         loss_type=OneOf(*PREFERENCE_KINDS), sft_weight=Range(0), label_smoothing=Range(0, 0.5), gamma=Range(0),
         perturbations=OneOf(*KINDS), magnitude=Range(1),
         frames_per_clip=Range(1), kl_chunk_size=Range(1))
register(DataConfig, max_length=Range(1), on_bad_row=OneOf(*ON_BAD_ROW), max_bad_fraction=Range(0, 1))
register(StageConfig, method=OneOf(*METHODS), epochs=Range(0, low_open=True), max_steps=Range(0),
         lr=Range(0, low_open=True), lora_rank=Range(1), lora_alpha=Range(0, low_open=True))
register_check(VideoRecipeConfig, lambda c: output_dir_problem(c.output_dir))
