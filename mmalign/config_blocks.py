"""The config blocks every family shares: one spelling per concept (``model:``, ``data:``, ``export:``, ``eval:``).

Each family's schema extends these (``DiffusionModelConfig(ModelConfig)``, ``VLMDataConfig(DataConfig)``, ...), so
a key that means the same thing is one field with one default and one docstring. A module without heavy imports:
the schemas load before any model library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExportConfig:
    """The ``export:`` block. Every family writes the trained model into ``output_dir`` itself (LoRA file / peft
    adapter, or a full pipeline / model folder) beside ``mmalign_config.yaml`` and ``summary.json``."""

    enabled: bool = True
    """Write the trained model at the end of the run (false: only checkpoints, if any)."""
