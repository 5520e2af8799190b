"""Typed config of ``recipes/vlm.py`` (loaded with :func:`mmalign.config.load_config`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mmalign.choices import ON_BAD_ROW
from mmalign.config_blocks import DataConfig, ExportConfig, renamed_block_key
from mmalign.lora_config import LoraConfig, migrate_lora_block, vlm_lora
from mmalign.mllm.model_config import VLMModelConfig
from mmalign.mllm.vlm.methods import VLMMethodConfig, check_method_keys, chosen_sections, renamed_method_key
from mmalign.train_config import TrainConfig
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check


@dataclass
class VLMDataConfig(DataConfig):
    """The ``data:`` block: the shared keys (:class:`mmalign.config_blocks.DataConfig`; ``path``: jsonl file, parquet
    file/folder, ``save_to_disk`` folder or hub dataset id; ``media_root``: where relative image paths resolve) and
    the VLM rows' own."""

    split: str | None = None
    """Split of a ``DatasetDict`` folder / hub dataset / split-named parquet folder (default: train)."""
    extra_image_field: str | None = None
    """Row field holding the mDPO corrupted / rDPO retrieved image (mDPO crops on the fly when absent)."""
    max_length: int | None = 1024
    """Maximum tokens per row; completions are cut at the end, prompts (with visual tokens) never."""
    on_overlong: str = "error"
    """error | drop: a prompt that leaves no room for the completion."""
    allow_outside_paths: bool = False
    """Read image paths that resolve outside the image root (absolute paths, ``../``, symlinks out of it); false:
    such a row is a bad row (error, or skipped with on_bad_row=skip)."""


@dataclass
class VLMExportConfig(ExportConfig):
    """The ``export:`` block: the peft adapter (LoRA) or the full model, with the processor, in ``output_dir``."""

    merge: bool = False
    """Also write ``merged/``: the base model with the adapter merged in (a plain transformers folder)."""


@dataclass
class VLMRecipeConfig:
    """``recipes/vlm.py`` configuration."""

    output_dir: str = "outputs/vlm"
    """Run folder: checkpoints/, logs/ (TensorBoard), summary.json, mmalign_config.yaml, the exported adapter or
    model (and merged/)."""
    model: VLMModelConfig = field(default_factory=VLMModelConfig)
    """Model, dtype, vision freezing."""
    lora: LoraConfig = field(default_factory=vlm_lora)
    """The shared LoRA block (:mod:`mmalign.lora_config`); ``rank: 0`` = full fine-tuning (frozen reference copy)."""
    method: VLMMethodConfig = field(default_factory=VLMMethodConfig)
    """Objective: DPO-family kind and beta mode (shared keys), mDPO's / rDPO's own sections
    (:mod:`mmalign.mllm.vlm.methods`)."""
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    """Preference rows and batching limits."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, precision, checkpoints (the shared training loop's config)."""
    export: VLMExportConfig = field(default_factory=VLMExportConfig)
    """What to write at the end."""

    def as_dict(self) -> dict:
        """A plain dict of the config with only the chosen method's section (the saved run config, which loads
        again under the key policy)."""
        return chosen_sections(asdict(self))

    @staticmethod
    def renamed_key(old: str, raw: dict) -> str | None:
        """Keys renamed in the one-core release (read for one release); the flat mDPO / rDPO keys
        (``method.anchor_delta`` → ``method.mdpo.anchor_delta``, ``method.rdpo_noisy`` → ``method.rdpo.noisy``)."""
        return renamed_method_key(old, raw) or _RENAMED.get(old) or renamed_block_key(old)

    @staticmethod
    def migrate(raw: dict) -> list[tuple[str, str]]:
        """Old values: ``lora.enabled: false`` → ``lora.rank: 0``; ``lora.target_modules`` string → list;
        ``export.adapter_dir`` dropped (the export is written into ``output_dir`` in every family)."""
        return [*migrate_lora_block(raw), *drop_adapter_dir(raw)]

    @staticmethod
    def check_given(cfg: VLMRecipeConfig, given: set[str]) -> None:
        """A ``method.*`` key ``method.name`` does not read is a ConfigError (:mod:`mmalign.mllm.vlm.methods`)."""
        check_method_keys(cfg.method.name, given)


_RENAMED = {"lora.r": "lora.rank", "method.loss": "method.loss_type"}


def drop_adapter_dir(raw: dict) -> list[tuple[str, str]]:
    """``export.adapter_dir`` (the export's sub-folder) is gone: the export goes into ``output_dir`` itself."""
    export = raw.get("export")
    if not isinstance(export, dict) or "adapter_dir" not in export:
        return []
    export.pop("adapter_dir")
    if not export:
        raw.pop("export")
    return [("export.adapter_dir", "output_dir (the adapter or model is written into the run folder itself)")]


# Ranges and choices, checked by load_config before any model loads (mmalign.validate; the method block's:
# mmalign.mllm.vlm.methods); method.name, method.loss_type and method.beta_mode are checked by
# mmalign.mllm.vlm.objective.check_method.
_FRACTION = Range(0, 1)
register(VLMDataConfig, max_length=Range(1), on_overlong=OneOf("error", "drop"), on_bad_row=OneOf(*ON_BAD_ROW),
         max_bad_fraction=_FRACTION, max_rows=Range(1))
register_check(VLMRecipeConfig, lambda c: output_dir_problem(c.output_dir))
