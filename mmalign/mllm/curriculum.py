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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DONE_FILE = "DONE"


@dataclass
class LoraSettings:
    """The fresh adapter each stage starts."""

    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    train_vision: bool = False
    """Also adapt the vision tower (TEMPLE's SFT stage unfreezes it); otherwise only the language model."""
    seed: int | None = None
    """Seed of the adapter's random init (LoRA A), drawn from a forked RNG; None: the global torch RNG, whose state
    after ``from_pretrained`` differs between processes (observed with transformers 5.23)."""


def _is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """Fold a peft adapter into the base weights and return the plain model (no-op for a plain model)."""
    return model.merge_and_unload() if _is_peft(model) else model


_VISION_PATTERNS = ("visual", "vision_tower", "vision_model", "multi_modal_projector")


def _target_modules(model: torch.nn.Module, lora: LoraSettings) -> Any:
    if lora.target_modules != "all-linear" or lora.train_vision:
        return lora.target_modules
    # all linear layers of the language model; the vision tower and projector stay frozen
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(p in name for p in _VISION_PATTERNS):
            if not name.endswith("lm_head"):
                names.add(name)
    return sorted(names)


def fresh_adapter(model: torch.nn.Module, lora: LoraSettings) -> torch.nn.Module:
    """Merge any existing adapter, freeze the base, attach a new zero-initialised LoRA (peft ``LoraConfig``)."""
    from peft import LoraConfig, get_peft_model

    base = merge_adapter(model)
    for p in base.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=_target_modules(base, lora))
    if lora.seed is None:
        return get_peft_model(base, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(lora.seed)
        return get_peft_model(base, cfg)


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
    lora_for: Callable[[Any], LoraSettings],
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
