"""Stage-wise curricula with LoRA: merge the previous stage's adapter, start a fresh one, reset the reference.

TEMPLE (``lscpku/TEMPLE`` ``train_scripts/*r16-r8-r4-r2*.sh``, spec §3): four DPO stages on pairs of magnitude
16 → 8 → 4 → 2 (easy → hard), each one epoch from the *merged* result of the previous stage with a *fresh*
LoRA; then an SFT stage (pre-SFT alignment: preference optimisation before instruction tuning). Because the
reference is the model with its adapter disabled, merging + a fresh adapter makes the reference of stage k the
policy at the end of stage k-1 — the per-stage reset. (A single run over an ordered sampler would keep one
fixed reference: a different method.)

Resumable per stage: a finished stage leaves ``<output_dir>/<NN>-<name>/adapter`` (peft folder) and a ``DONE``
marker. On restart finished stages are replayed by loading their adapters and merging (cheap, exact), and the
first unfinished stage resumes from its own latest training checkpoint (``train.resume: latest``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmalign.lora_config import LoraConfig
from mmalign.mllm.export import merge_adapter

DONE_FILE = "DONE"


@dataclass
class StageAdapter:
    """The fresh adapter each stage starts: the ``lora:`` block (:class:`mmalign.lora_config.LoraConfig`) plus
    where it goes and how it is seeded."""

    lora: LoraConfig = field(default_factory=LoraConfig)
    train_vision: bool = False
    """Also adapt the vision tower (TEMPLE's SFT stage unfreezes it); otherwise only the language model."""
    seed: int | None = None
    """Seed of the adapter's random init (LoRA A), drawn from a forked RNG; None: the global torch RNG, whose state
    after ``from_pretrained`` differs between processes (observed with transformers 5.23)."""


def fresh_adapter(model: torch.nn.Module, adapter: StageAdapter) -> torch.nn.Module:
    """Merge any existing adapter, freeze the base, attach a new zero-initialised LoRA (the one selector and peft
    config of :func:`mmalign.mllm.model.add_lora`)."""
    from mmalign.mllm.model import add_lora

    base = merge_adapter(model)
    for p in base.parameters():
        p.requires_grad_(False)
    return add_lora(base, adapter.lora, include_vision=adapter.train_vision, seed=adapter.seed)


def stage_dir(output_dir: str | Path, index: int, name: str) -> Path:
    return Path(output_dir) / f"{index:02d}-{name}"


def is_done(folder: Path) -> bool:
    return (folder / DONE_FILE).is_file() and (folder / "adapter").is_dir()


def replay_stage(model: torch.nn.Module, folder: Path) -> torch.nn.Module:
    """Apply a finished stage: load its adapter on the merged model and merge it."""
    from peft import PeftModel

    base = merge_adapter(model)
    return PeftModel.from_pretrained(base, str(folder / "adapter")).merge_and_unload()


def run_stages(
    model: torch.nn.Module,
    stages: Sequence[Any],
    output_dir: str | Path,
    run_stage: Callable[[torch.nn.Module, Any, Path], dict[str, Any]],
    lora_for: Callable[[Any], StageAdapter],
    *,
    is_main_process: bool = True,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Run ``stages`` in order; ``run_stage(peft_model, stage, folder)`` trains one stage in place.

    Each stage needs a ``name`` attribute. Returns the final model (adapter merged) and per-stage summaries. Only
    the main process (``is_main_process``) writes a stage's adapter folder and ``DONE`` marker.
    """
    summaries = []
    for i, stage in enumerate(stages):
        folder = stage_dir(output_dir, i, stage.name)
        if is_done(folder):
            model = replay_stage(model, folder)
            summaries.append(json.loads((folder / DONE_FILE).read_text() or "{}"))
            continue
        model = fresh_adapter(model, lora_for(stage))
        summary = run_stage(model, stage, folder)
        slim = {k: v for k, v in summary.items() if k != "history"}
        if is_main_process:
            model.save_pretrained(str(folder / "adapter"))
            (folder / DONE_FILE).write_text(json.dumps({"stage": stage.name, **slim}, default=str))
        summaries.append({"stage": stage.name, **slim})
        model = merge_adapter(model)
    return model, summaries
