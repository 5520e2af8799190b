"""Typed config of ``recipes/vlm.py`` (loaded with :func:`mmalign.config.load_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mmalign.choices import ON_BAD_ROW
from mmalign.config import MISSING
from mmalign.lora_config import LoraConfig, migrate_lora_block, vlm_lora
from mmalign.mllm.model_config import VLMModelConfig
from mmalign.mllm.vlm.methods import check_method_keys
from mmalign.train_config import TrainConfig
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check


@dataclass
class VLMMethodConfig:
    """The ``method:`` block: objective and its options."""

    name: str = "dpo"
    """dpo (any ``loss_type``) | mdpo (DPO + conditional + anchor terms) | rdpo (DPO + retrieved-image term)."""
    loss_type: str = "sigmoid"
    """A kind of :func:`mmalign.objectives.preference_loss`: sigmoid, cdpo, robust, hinge, ipo, bco_pair, simpo,
    orpo. RPO = sigmoid with ``sft_weight`` > 0."""
    beta: float = 0.1
    """Inverse temperature (IPO's tau, ORPO's lambda)."""
    label_smoothing: float = 0.0
    """eps of cdpo / robust / simpo."""
    gamma: float = 0.0
    """SimPO target margin."""
    sft_weight: float = 0.0
    """Weight of the chosen NLL term (token mean over the batch, TRL ``sft``); RPO alpha, MM-DPO gamma (0.25)."""
    anchor_delta: float = 0.0
    """mDPO anchor delta in ``-logsig(beta rho_w - delta)`` (0 in the official code)."""
    crop_scale_min: float = 0.01
    """mDPO crop: smallest kept fraction of the image area."""
    crop_scale_max: float = 0.2
    """mDPO crop: largest kept fraction of the image area."""
    rdpo_noisy: bool = False
    """rDPO: score rejected and retrieved-image terms with the official code's top-1-non-label log-probs
    (reproduction only; the paper uses label log-probs)."""
    beta_mode: str = "fixed"
    """fixed | per_sample (MM-RLHF paper: reward margins) | ls_factor (MM-RLHF code's per-row factor) |
    batch_implicit (what the released MM-RLHF code computes: one beta per batch from the log-ratio margins)."""
    beta_weight: float = 0.1
    """MM-RLHF w."""
    beta_k: float = 1.0
    """MM-RLHF k in ``1 - exp(-k delta)``."""
    share_vision_features: bool = True
    """Encode each image once per step and reuse the features for chosen, rejected, extra and reference rows
    (only when the vision tower and projector are frozen and carry no adapter)."""


@dataclass
class VLMDataConfig:
    """The ``data:`` block."""

    path: str = MISSING
    """jsonl file, parquet file/folder, ``save_to_disk`` folder or hub dataset id."""
    split: str | None = None
    """Split of a ``DatasetDict`` folder / hub dataset / split-named parquet folder (default: train)."""
    image_root: str | None = None
    """Folder that relative image paths resolve against (default: the data file's folder)."""
    extra_image_field: str | None = None
    """Row field holding the mDPO corrupted / rDPO retrieved image (mDPO crops on the fly when absent)."""
    max_length: int | None = 1024
    """Maximum tokens per row; completions are cut at the end, prompts (with visual tokens) never."""
    on_overlong: str = "error"
    """error | drop: a prompt that leaves no room for the completion."""
    on_bad_row: str = "error"
    """error | skip (the same key in every family): rows with missing fields, empty completions or missing image
    files (found at load time) stop the run, or are dropped and reported in summary.json["data"]["skips"]."""
    max_bad_fraction: float = 0.05
    """Stop when unreadable images (found while training) exceed this fraction of the rows."""
    max_rows: int | None = None
    """Use only the first N rows."""
    allow_outside_paths: bool = False
    """Read image paths that resolve outside the image root (absolute paths, ``../``, symlinks out of it); false:
    such a row is a bad row (error, or skipped with on_bad_row=skip)."""


@dataclass
class VLMExportConfig:
    """The ``export:`` block."""

    adapter_dir: str = "adapter"
    """Sub-folder of output_dir for the peft adapter (LoRA) or the full model (full fine-tuning)."""
    merge: bool = False
    """Also write ``merged/``: the base model with the adapter merged in (a plain transformers folder)."""


@dataclass
class VLMRecipeConfig:
    """``recipes/vlm.py`` configuration."""

    output_dir: str = "outputs/vlm"
    """Run folder: checkpoints/, logs/ (TensorBoard), summary.json, adapter/ (and merged/)."""
    model: VLMModelConfig = field(default_factory=VLMModelConfig)
    """Model, dtype, vision freezing."""
    lora: LoraConfig = field(default_factory=vlm_lora)
    """The shared LoRA block (:mod:`mmalign.lora_config`); ``rank: 0`` = full fine-tuning (frozen reference copy)."""
    method: VLMMethodConfig = field(default_factory=VLMMethodConfig)
    """Objective: DPO-family kind, mDPO / rDPO terms, beta mode."""
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    """Preference rows and batching limits."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, precision, checkpoints (the shared training loop's config)."""
    export: VLMExportConfig = field(default_factory=VLMExportConfig)
    """What to write at the end."""

    @staticmethod
    def renamed_key(old: str, raw: dict) -> str | None:
        """Keys renamed in the one-core release (read for one release)."""
        return _RENAMED.get(old)

    @staticmethod
    def migrate(raw: dict) -> list[tuple[str, str]]:
        """Old values: ``lora.enabled: false`` → ``lora.rank: 0``; ``lora.target_modules`` string → list."""
        return migrate_lora_block(raw)

    @staticmethod
    def check_given(cfg: VLMRecipeConfig, given: set[str]) -> None:
        """A ``method.*`` key ``method.name`` does not read is a ConfigError (:mod:`mmalign.mllm.vlm.methods`)."""
        shared = tuple(f.name for f in fields(VLMMethodConfig) if f.name != "name")
        check_method_keys(cfg.method.name, given, shared)


_RENAMED = {"lora.r": "lora.rank", "method.loss": "method.loss_type"}


# Ranges and choices, checked by load_config before any model loads (mmalign.validate); method.name, method.loss_type
# and method.beta_mode are checked by mmalign.mllm.vlm.objective.check_method.
_FRACTION = Range(0, 1)
register(VLMMethodConfig, beta=Range(0, low_open=True), label_smoothing=Range(0, 0.5), gamma=Range(0),
         sft_weight=Range(0), crop_scale_min=Range(0, 1, low_open=True), crop_scale_max=Range(0, 1, low_open=True),
         beta_weight=Range(0), beta_k=Range(0, low_open=True))
register(VLMDataConfig, max_length=Range(1), on_overlong=OneOf("error", "drop"), on_bad_row=OneOf(*ON_BAD_ROW),
         max_bad_fraction=_FRACTION, max_rows=Range(1))
register_check(VLMRecipeConfig, lambda c: output_dir_problem(c.output_dir))
