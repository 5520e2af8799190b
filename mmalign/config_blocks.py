"""The config blocks every family shares: one spelling per concept (``model:``, ``data:``, ``export:``, ``eval:``).

Each family's schema extends these (``DiffusionModelConfig(ModelConfig)``, ``VLMDataConfig(DataConfig)``, ...), so
a key that means the same thing is one field with one default and one docstring in every family:

* ``model.pretrained``, ``model.dtype`` (the frozen weights), ``model.attn_implementation``,
  ``model.gradient_checkpointing``;
* ``data.path``, ``data.media_root``, ``data.max_rows``, ``data.on_bad_row`` / ``data.max_bad_fraction`` (one default
  and one meaning);
* ``export.enabled`` (the trained model is written into ``output_dir`` in every family);
* ``eval:`` (what runs after training, on the main process).

The spellings they replace (``model.attention``, ``model.train_vision``, ``data.limit``, ``data.image_root``,
``data.video_root``, ``toy_eval``) still load for one release with a deprecation note: :func:`renamed_block_key`.
A module without heavy imports: the schemas load before any model library.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmalign.choices import ON_BAD_ROW
from mmalign.config import MISSING
from mmalign.config_error import ConfigError
from mmalign.validate import OneOf, Range, register

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    """The ``model:`` block's shared keys."""

    pretrained: str = MISSING
    """Hub id or local folder of the checkpoint; ``tiny:<kind>``: a tiny random-weight model of that kind, saved
    under ``<output_dir>/tiny_inputs`` (:mod:`mmalign.testing.placeholders`)."""
    dtype: str | None = None
    """dtype of the frozen weights: float32 | bfloat16 | float16; null: the compute dtype of
    ``train.mixed_precision`` (float32 with ``no``). The VLM / video families default to float32 (their full
    fine-tuning trains these weights) and need a value."""
    attn_implementation: str | None = "sdpa"
    """Attention backend: sdpa in every family; diffusion also xformers | auto (xformers when a working build is
    found); VLM / video also eager | flash_attention_2 (null: transformers' default)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~+1/3 step time)."""


@dataclass
class DataConfig:
    """The ``data:`` block's shared keys."""

    path: str = MISSING
    """The training data: a file, folder or hub id (``tiny:pairs``: a small generated set)."""
    media_root: str | None = None
    """Folder that relative image / video paths of the rows resolve against (null: the data file's folder)."""
    max_rows: int | None = None
    """Use only the first N rows (null: all)."""
    on_bad_row: str = "error"
    """error: the first bad row (missing field, unreadable image or video) stops the run, naming file, row and
    field | skip: it is dropped, counted and reported in summary.json["data"]["skips"] (the same key in every
    family)."""
    max_bad_fraction: float = 0.05
    """With ``on_bad_row: skip``: stop when more than this fraction of the rows has been skipped."""


@dataclass
class ExportConfig:
    """The ``export:`` block. Every family writes the trained model into ``output_dir`` itself (LoRA file / peft
    adapter, or a full pipeline / model folder) beside ``mmalign_config.yaml`` and ``summary.json``."""

    enabled: bool = True
    """Write the trained model at the end of the run (false: only checkpoints, if any)."""


@dataclass
class EvalConfig:
    """The ``eval:`` block: what runs after training, on the main process (:func:`mmalign.recipe.export_and_evaluate`);
    each family adds its evaluation's keys."""


register(ModelConfig, dtype=OneOf(*DTYPES))
register(DataConfig, max_rows=Range(1), on_bad_row=OneOf(*ON_BAD_ROW), max_bad_fraction=Range(0, 1))

RENAMED_BLOCK_KEYS = {"model.attention": "model.attn_implementation", "data.limit": "data.max_rows",
                      "data.image_root": "data.media_root", "data.video_root": "data.media_root"}
"""Old spelling → the shared one (read for one release)."""
RENAMED_BLOCKS = {"toy_eval": "eval"}


def renamed_block_key(key: str, raw: dict | None = None) -> str | None:
    """The shared spelling of an old key (``toy_eval.enabled`` → ``eval.enabled``), or None."""
    if key in RENAMED_BLOCK_KEYS:
        return RENAMED_BLOCK_KEYS[key]
    block, _, rest = key.partition(".")
    if block in RENAMED_BLOCKS and rest:
        return f"{RENAMED_BLOCKS[block]}.{rest}"
    return None


def migrate_train_vision(raw: dict) -> list[tuple[str, str]]:
    """``model.train_vision: X`` → ``model.freeze_vision: not X``, and the same per stage
    (``stages.i.train_vision``)."""
    notes: list[tuple[str, str]] = []

    def flip(node: object, where: str) -> None:
        if not isinstance(node, dict) or "train_vision" not in node:
            return
        value = node.pop("train_vision")
        if "freeze_vision" in node:
            raise ConfigError(f"config keys '{where}train_vision' (deprecated) and '{where}freeze_vision' are both "
                              f"set; keep '{where}freeze_vision'")
        node["freeze_vision"] = None if value is None else not _truthy(value)
        notes.append((f"{where}train_vision", f"{where}freeze_vision (the opposite value)"))

    flip(raw.get("model"), "model.")
    stages = raw.get("stages")
    items = stages.items() if isinstance(stages, dict) else enumerate(stages or [])
    for i, stage in items:
        flip(stage, f"stages.{i}.")
    return notes


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)
