"""The one recipe skeleton: :func:`run` drives a :class:`Family` through the same steps in every family.

    # recipes/vlm.py
    from mmalign.families.vlm import VLM
    from mmalign.recipe import main_of, run_recipe
    main = main_of(VLM())

The steps, in this order for diffusion, VLM and video alike:

1. parse the config (typed, unknown keys rejected) and the family's pre-accelerator fix-ups; a ``train.resume``
   is checked here (:func:`mmalign.resume_check.check_resume`: files and recorded shape keys, no weights read);
2. lock the output folder (one run per folder);
3. the accelerator;
4. resolve ``tiny:`` placeholders (the main process writes them first, other ranks reuse them);
5. check the config against the family (methods, paths, options) — before any model loads; the run config
   ``<output_dir>/mmalign_config.yaml`` is written here by the main process, so a checkpoint of an interrupted run
   can be exported (``mmalign export``) and the exported folder carries the settings it was trained with;
6. the data (bad data fails before the model is read; one global batch must fit);
7. model and reference;
8. the step (and the data set / collator / validation the shared loop needs: a :class:`Job`);
9. train with the shared loop (a curriculum family runs it once per stage);
10. :func:`export_and_evaluate`: export into ``output_dir`` (the same layout in every family: the output folder
    *is* the trained model — a LoRA file / peft adapter, or a full pipeline / model folder) and the evaluation, on
    the main process;
11. the summary (``summary.json``).

A family implements the steps that differ (:class:`Family`); everything else lives here once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmalign.recipe_entry import run_recipe
from mmalign.run_config import RUN_CONFIG, run_config_dict, save_run_config

__all__ = ["Family", "Job", "run", "main_of", "run_recipe", "export_and_evaluate", "RUN_CONFIG"]

@dataclass
class Job:
    """What a family built for the shared training loop, and what its export / evaluation need afterwards."""

    model: Any
    """The trained module (policy); the loop prepares and steps it."""
    dataset: Any
    step_fn: Callable[[Any, Any], Any]
    collate_fn: Callable | None = None
    sample_weights: list[float] | None = None
    validate_fn: Callable[[int], dict] | None = None
    validate_every: int = 0
    parts: dict[str, Any] = field(default_factory=dict)
    """Family-specific things its later steps use (pipeline, processor, reference, EMA, ...)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Fields for summary.json known before training (data counts, setup)."""


class Family(Protocol):
    """What differs between the families; :func:`run` calls these in its fixed order."""

    name: str
    """diffusion | vlm | video (the ``tiny:`` table and the recipe's name)."""
    schema: type
    """The config dataclass (``DiffusionRecipeConfig``, ``VLMRecipeConfig``, ``VideoRecipeConfig``)."""

    def prepare_config(self, cfg: Any) -> None:
        """Step 1: what must hold before the accelerator is made (e.g. shipped paths made absolute)."""

    def check(self, cfg: Any) -> None:
        """Step 5: methods, paths and options checked before any model loads (ConfigError naming the key)."""

    def load_data(self, cfg: Any, accelerator: Any) -> Any:
        """Step 6: the data set (``len()`` counts examples), or None when stages read their own files."""

    def load_model(self, cfg: Any, data: Any, accelerator: Any) -> dict[str, Any]:
        """Step 7: model and reference (and whatever else the step needs: pipeline, processor)."""

    def make_job(self, cfg: Any, data: Any, built: dict[str, Any], accelerator: Any) -> Job:
        """Step 8: the step function and what the shared loop needs."""

    def train(self, cfg: Any, job: Job, accelerator: Any) -> dict[str, Any]:
        """Step 9: the shared loop (:func:`train_job`), or a family's stages of it."""

    def before_export(self, cfg: Any, job: Job, accelerator: Any) -> None:
        """On every rank after training (collective work such as copying the EMA weights in)."""

    def export(self, cfg: Any, job: Job, output_dir: Path) -> dict[str, Any]:
        """Step 10, main process: write the trained model into ``output_dir``; returns summary fields."""

    def evaluate(self, cfg: Any, job: Job, accelerator: Any) -> dict[str, Any]:
        """Step 10, main process: the family's evaluation after training (toy eval / toy metric); {} when off."""


def parse(family: Family, argv: list[str] | None) -> Any:
    """Step 1: ``--config <yaml> [key=value ...]`` onto the family's schema."""
    from mmalign.config import load_config

    parser = argparse.ArgumentParser(prog=f"recipes/{family.name}.py",
                                     description=f"{family.name} preference training (mmalign)")
    parser.add_argument("--config", required=True, help=f"recipe YAML (recipes/configs/{family.name}/*.yaml)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(family.schema, args.config, overrides)
    family.prepare_config(cfg)
    return cfg


def train_job(cfg: Any, job: Job, accelerator: Any, output_dir: str | Path | None = None,
              train_cfg: Any = None) -> dict[str, Any]:
    """The shared loop (:func:`mmalign.training.loop.train`) over a :class:`Job`."""
    from mmalign.training.loop import train

    return train(train_cfg or cfg.train, output_dir=Path(output_dir or cfg.output_dir), model=job.model,
                 dataset=job.dataset, step_fn=job.step_fn, collate_fn=job.collate_fn, accelerator=accelerator,
                 validate_fn=job.validate_fn, validate_every=job.validate_every, run_config=run_config_dict(cfg),
                 sample_weights=job.sample_weights)


def export_and_evaluate(family: Family, cfg: Any, job: Job, accelerator: Any, summary: dict[str, Any]
                        ) -> dict[str, Any]:
    """Step 10: export into ``output_dir`` and evaluate, on the main process; returns the summary fields.

    A failed export keeps the trained weights in a checkpoint and says so (:mod:`mmalign.safe_export`).
    ``export.enabled: false`` writes no model."""
    from mmalign.safe_export import export_or_keep_checkpoint

    output_dir = Path(cfg.output_dir)
    family.before_export(cfg, job, accelerator)
    extra: dict[str, Any] = {}
    if not accelerator.is_main_process:
        return extra
    if cfg.export.enabled:
        extra.update(export_or_keep_checkpoint(lambda: family.export(cfg, job, output_dir), accelerator, cfg.train,
                                               output_dir, summary))
    extra.update(family.evaluate(cfg, job, accelerator))
    return extra


def run(family: Family, argv: list[str] | None = None) -> dict[str, Any]:
    """The recipe of ``family`` (steps in the module docstring); returns the summary (with ``trained_model``, the
    trained module, which summary.json leaves out)."""
    from accelerate.utils import set_seed

    from mmalign.resume_check import check_resume
    from mmalign.run_lock import lock_run_folder
    from mmalign.testing.placeholders import resolve_placeholders
    from mmalign.training.distributed import make_accelerator
    from mmalign.training.metrics import write_summary
    from mmalign.validate import check_batch_fits

    cfg = parse(family, argv)  # 1
    output_dir = Path(cfg.output_dir)
    check_resume(cfg, output_dir)  # train.resume: the checkpoint's files and recorded shape keys, before anything
    if note := lock_run_folder(output_dir):  # 2: before anything is written there
        print(f"NOTE: {note}")
    accelerator = make_accelerator(cfg.train, output_dir)  # 3
    with accelerator.main_process_first():  # 4: other ranks reuse what the main process wrote
        for note in resolve_placeholders(cfg, output_dir / "tiny_inputs", family=family.name):
            accelerator.print(f"NOTE: {note}")
    family.check(cfg)  # 5
    if accelerator.is_main_process:
        save_run_config(cfg, output_dir)
    set_seed(cfg.train.seed)  # adapter initialisation and any data pass are reproducible too

    data = family.load_data(cfg, accelerator)  # 6
    if data is not None:
        check_batch_fits(len(data), cfg.train.batch_size, accelerator.num_processes)
    built = family.load_model(cfg, data, accelerator)  # 7
    job = family.make_job(cfg, data, built, accelerator)  # 8
    summary = family.train(cfg, job, accelerator)  # 9
    summary.update(export_and_evaluate(family, cfg, job, accelerator, summary))  # 10
    summary.update(job.summary)
    if accelerator.is_main_process:  # 11
        write_summary(output_dir, {k: v for k, v in summary.items() if k != "history"})
    return {**summary, "trained_model": job.model}  # the module itself: for callers in this process (tests)


def main_of(family: Family) -> Callable[[list[str] | None], dict[str, Any]]:
    """The ``main(argv)`` of a recipe file: :func:`run` of ``family``."""

    def main(argv: list[str] | None = None) -> dict[str, Any]:
        return run(family, argv)

    main.__doc__ = f"recipes/{family.name}.py: :func:`mmalign.recipe.run` of the {family.name} family."
    return main
