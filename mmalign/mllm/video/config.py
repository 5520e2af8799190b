"""Typed config of ``recipes/video.py`` (loaded with :func:`mmalign.config.load_config`): RRPO, TEMPLE (DPO
curriculum + SFT), VDPO and plain SFT on video LLMs. Ranges and choices are checked before any model loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mmalign.config import MISSING
from mmalign.config_blocks import (
    DataConfig,
    EvalConfig,
    ExportConfig,
    migrate_train_vision,
    renamed_block_key,
)
from mmalign.data.video_io import VideoSampling
from mmalign.lora_config import LoraConfig, is_false, migrate_lora_block, video_lora
from mmalign.mllm.model_config import VLMModelConfig
from mmalign.mllm.video.methods import (
    METHODS,
    MethodConfig,
    check_method_keys,
    chosen_sections,
    renamed_method_key,
)
from mmalign.train_config import TrainConfig
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check


@dataclass
class VideoModelConfig(VLMModelConfig):
    """The ``model:`` block: the VLM one (:class:`mmalign.mllm.model_config.VLMModelConfig`; ``pretrained``:
    ``tiny:qwen2vl`` / ``tiny:qwen25vl`` / ``tiny:llavaov`` / ``tiny:qwen2vl-toy`` — the variant the toy video
    configs train, M-RoPE base 10, :data:`mmalign.testing.tiny_video.TOY_VARIANT` —; ``freeze_vision: false``
    adapts / trains the vision tower too) and the model family of RRPO's defaults."""

    family: str = "qwen25vl"
    """Model family for RRPO's per-model alpha/beta defaults: llava_video, longvu, videochat2 (others: default)."""


@dataclass
class VideoDataConfig(DataConfig):
    """The ``data:`` block: the shared keys (:class:`mmalign.config_blocks.DataConfig`; ``media_root``: where relative
    video paths resolve; ``max_rows`` applies to every stage's file too) and the token limit."""

    path: str = ""
    """jsonl file of rows (formats in ``mmalign.data.video_rows``); stages name their own files."""
    max_length: int = 4096
    """Max tokens per sequence; only completions are truncated, never visual tokens."""


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
    freeze_vision: bool | None = None
    """Stage vision tower frozen or trained (TEMPLE SFT: false; None: ``model.freeze_vision``)."""


@dataclass
class VideoEvalConfig(EvalConfig):
    """The ``eval:`` block: the toy metric (:mod:`mmalign.toy.video_eval`)."""

    toy_manifest: str | None = None
    """Toy video manifest: report forced-choice direction accuracy before and after training."""
    split: str = "test"
    """Manifest split to evaluate."""


@dataclass
class VideoRecipeConfig:
    output_dir: str = MISSING
    """Run folder: checkpoints, stage folders, adapter, summary.json."""
    model: VideoModelConfig = field(default_factory=VideoModelConfig)
    lora: LoraConfig = field(default_factory=video_lora)
    """The shared LoRA block (:mod:`mmalign.lora_config`); ``rank: 0`` = full fine-tuning (frozen reference copy).
    Curriculum stages always train LoRA adapters."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """The method (a curriculum: each stage names its own), the shared DPO-family keys and the sections
    ``method.vdpo.*`` / ``method.rrpo.*`` (:mod:`mmalign.mllm.video.methods`); every stage reads the same block."""
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    video: VideoSampling = field(default_factory=VideoSampling)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[StageConfig] = field(default_factory=list)
    """Curriculum stages, run in order (empty: one run of ``method`` on ``data.path``)."""
    eval: VideoEvalConfig = field(default_factory=VideoEvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    """The adapter (LoRA), the full model (full fine-tuning) or a curriculum's merged stages, with the processor,
    written into ``output_dir``: a folder loadable as ``model.pretrained``."""

    def as_dict(self) -> dict:
        """A plain dict of the config with only the sections of the run's methods (the saved run config, which
        loads again under the key policy)."""
        return chosen_sections(asdict(self))

    @staticmethod
    def renamed_key(old: str, raw: dict) -> str | None:
        """Keys renamed in the one-core release (read for one release); the flat VDPO / RRPO keys
        (``method.magnitude`` → ``method.vdpo.magnitude``, ``method.alpha`` → ``method.rrpo.alpha``, ...)."""
        parts = old.split(".")
        if len(parts) == 3 and parts[0] == "stages" and parts[2] == "lora_r":
            return f"stages.{parts[1]}.lora_rank"
        return renamed_method_key(old, raw) or _RENAMED.get(old) or renamed_block_key(old)

    @staticmethod
    def migrate(raw: dict) -> list[tuple[str, str]]:
        """Old values: ``model.lora: false`` → ``lora.rank: 0``; ``data.on_error: raise|skip`` →
        ``data.on_bad_row: error|skip``; ``stages[i].lora_r`` → ``lora_rank``; the ``lora:`` block's old forms;
        ``model.train_vision`` / ``stages[i].train_vision`` → ``freeze_vision`` (the opposite value)."""
        return [*_migrate_video(raw), *migrate_lora_block(raw), *migrate_train_vision(raw)]

    @staticmethod
    def check_given(cfg: VideoRecipeConfig, given: set[str]) -> None:
        """A ``method.*`` key no method of the run reads is a ConfigError (:mod:`mmalign.mllm.video.methods`)."""
        check_method_keys([s.method for s in cfg.stages] or [cfg.method.name], given)


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



# Ranges and choices, checked by load_config before any model loads (mmalign.validate; the method block's:
# mmalign.mllm.video.methods).
register(VideoDataConfig, max_length=Range(1))
register(StageConfig, method=OneOf(*METHODS), epochs=Range(0, low_open=True), max_steps=Range(0),
         lr=Range(0, low_open=True), lora_rank=Range(1), lora_alpha=Range(0, low_open=True))
register_check(VideoRecipeConfig, lambda c: output_dir_problem(c.output_dir))
