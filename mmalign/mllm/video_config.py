"""Typed config of ``recipes/video.py`` (loaded with :func:`mmalign.config.load_config`): RRPO, TEMPLE (DPO
curriculum + SFT), VDPO and plain SFT on video LLMs. Ranges and choices are checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.choices import PREFERENCE_KINDS
from mmalign.choices import VIDEO_METHODS as METHODS
from mmalign.config import MISSING
from mmalign.mllm.temporal import KINDS
from mmalign.mllm.video_io import VideoSampling
from mmalign.train_config import TrainConfig
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
