"""Toy-world evaluation after training: the judge's score of the base model vs the aligned model.

On the main process, after the training loop, the recipe calls :func:`run_toy_eval`:

1. captions: the toy world's held-out split (108 captions whose (size, color, shape, position) combinations never
   occur in the training pairs, :func:`mmalign.toy.captions.heldout_captions`), all 180 captions, or a text file;
2. base model = the same pipeline with the LoRA adapters disabled (inside try/finally, as the training reference),
   or for full fine-tuning the frozen reference copy (re-read from ``model.pretrained`` when the method is
   reference-free and none was built);
3. both models sample every (caption, seed) with the same per-image generators and are scored by the toy judge
   through :func:`mmalign.toy.evaluate.evaluate_pipeline` / :func:`~mmalign.toy.evaluate.compare` — the plan,
   sampler, ``toy-judge`` scorer, win counts and bootstrap of ``mmalign evaluate`` (:mod:`mmalign.evaluation`), so
   ``mmalign evaluate <output_dir> --scorer toy-judge`` on the same captions / seeds / sampler reports these numbers;
4. a short table is printed, ``summary.json["toy_eval"]`` gets base / aligned means, the gain, the win rate of
   aligned over base (ties count half), the std over sampling seeds and the number of images; the side-by-side grid
   (base | aligned) goes to ``<output_dir>/toy_eval/side_by_side.png``, the per-image scores to
   ``<output_dir>/toy_eval/scores.json`` (and the images to ``images.npz`` with ``toy_eval.save_images``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from mmalign.config import ConfigError
from mmalign.diffusion.config import DiffusionRecipeConfig, ToyEvalConfig
from mmalign.diffusion.reference import ReferenceProvider, adapters_disabled, unwrap
from mmalign.diffusion.registry import method_spec

EVAL_DIR = "toy_eval"
GRID_FILE = "side_by_side.png"
SCORES_FILE = "scores.json"
IMAGES_FILE = "images.npz"


def eval_captions(settings: ToyEvalConfig) -> list[str]:
    """The evaluation captions named by ``toy_eval.captions`` (heldout | all | a file), each checked against the toy
    grammar; ``max_captions`` keeps the first N."""
    from mmalign.toy.captions import all_captions, heldout_captions, parse_caption
    from mmalign.toy.paths import read_captions

    source = settings.captions
    if source == "heldout":
        captions = heldout_captions()
    elif source == "all":
        captions = all_captions()
    else:
        if not Path(source).is_file():
            raise ConfigError(f"config key 'toy_eval.captions': '{source}' is neither heldout, all nor a file")
        captions = read_captions(source)
        for line, caption in enumerate(captions, 1):
            try:
                parse_caption(caption)
            except ValueError as err:
                raise ConfigError(f"toy_eval.captions file {source}, caption {line}: {err}") from None
    if settings.max_captions is not None:
        captions = captions[: settings.max_captions]
    return captions


def check_toy_eval(cfg: DiffusionRecipeConfig) -> None:
    """Fail before training on a toy_eval block that cannot run."""
    settings = cfg.toy_eval
    if not settings.enabled:
        return
    if method_spec(cfg.method.name).export is not None:  # e.g. PPD's user adapter: no one aligned model
        raise ConfigError(f"config key 'toy_eval.enabled': method '{cfg.method.name}' exports its own model "
                          "(PPD: a user adapter, evaluated per user by mmalign.diffusion.ppd); toy_eval compares "
                          "one base and one aligned model")
    if not settings.seeds:
        raise ConfigError("config key 'toy_eval.seeds' needs at least one seed")
    if settings.num_inference_steps < 1 or settings.grid_rows < 1 or settings.grid_columns < 1:
        raise ConfigError("config keys 'toy_eval.num_inference_steps', 'grid_rows', 'grid_columns' must be >= 1")
    if not eval_captions(settings):
        raise ConfigError(f"config key 'toy_eval.captions': no captions in '{settings.captions}'")


def _denoiser_name(pipe) -> str:
    """``unet`` (SD, SDXL) or ``transformer`` (SD3, FLUX)."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


@contextmanager
def _swapped_unet(pipe, unet) -> Iterator[Any]:
    name = _denoiser_name(pipe)
    original = getattr(pipe, name)
    setattr(pipe, name, unet)
    try:
        yield pipe
    finally:
        setattr(pipe, name, original)


@contextmanager
def base_model(pipe, reference: ReferenceProvider, use_lora: bool, pretrained: str,
               revision: str | None = None) -> Iterator[Any]:
    """``pipe`` temporarily holding the base model: LoRA adapters disabled (re-enabled in ``finally``), the frozen
    reference copy, or (full fine-tuning, reference-free) the UNet re-read from ``pretrained``."""
    name = _denoiser_name(pipe)
    if use_lora:
        with adapters_disabled(getattr(pipe, name)):
            yield pipe
    elif reference.mode == "frozen_copy":
        with _swapped_unet(pipe, reference.frozen):
            yield pipe
    else:
        trained = getattr(pipe, name)
        kwargs = {"revision": revision} if revision else {}
        fresh = type(trained).from_pretrained(pretrained, subfolder=name, **kwargs)
        with _swapped_unet(pipe, fresh.to(trained.device, trained.dtype).eval()):
            yield pipe


def _evaluate(pipe, captions: list[str], settings: ToyEvalConfig, autocast, which: str) -> dict[str, Any]:
    from mmalign.toy.evaluate import evaluate_pipeline

    with autocast():
        return evaluate_pipeline(pipe, captions, settings.seeds, num_inference_steps=settings.num_inference_steps,
                                 guidance_scale=settings.guidance_scale, batch_size=settings.batch_size,
                                 return_images=True, desc=f"toy eval ({which})")


def _model_row(result: dict[str, Any]) -> dict[str, Any]:
    return {"mean": result["mean"], "std_over_seeds": result["std_over_seeds"], "per_seed": result["per_seed"],
            "terms": result["terms"]}


def summarize(base: dict[str, Any], aligned: dict[str, Any], settings: ToyEvalConfig) -> dict[str, Any]:
    """The ``summary.json["toy_eval"]`` block from two :func:`evaluate_pipeline` results.

    ``gain_std_over_seeds`` is the std (ddof=1) over sampling seeds of the per-seed gain (aligned - base mean over
    captions); ``gain_over_seed_std`` = gain / max(base, aligned std over seeds); ``gain_standard_error`` is the
    paired standard error of the gain over the matched images (:func:`mmalign.toy.evaluate.compare`);
    ``win_rate_ci95`` the paired bootstrap interval over captions of ``mmalign evaluate`` (same defaults). These are
    sampling spreads of one trained model; the spread over *training* seeds is measured by ``bench/toy_quality.py``.
    """
    from mmalign.evaluation.generation import Plan
    from mmalign.evaluation.stats import outcomes, paired_bootstrap_ci
    from mmalign.toy.evaluate import compare

    cmp = compare(base, aligned)
    groups = Plan(base["captions"], base["seeds"]).groups()  # bootstrap over captions, as `mmalign evaluate`
    win_ci = paired_bootstrap_ci(outcomes(base["scores"], aligned["scores"]), groups)
    per_seed_gain = np.asarray(aligned["per_seed"]) - np.asarray(base["per_seed"])
    gain_std = float(per_seed_gain.std(ddof=1)) if len(per_seed_gain) > 1 else 0.0
    seed_std = max(base["std_over_seeds"], aligned["std_over_seeds"])
    return {
        "base_mean": cmp["base_mean"], "aligned_mean": cmp["aligned_mean"], "mean_gain": cmp["mean_gain"],
        "win_rate": cmp["win_rate"], "win_rate_ci95": win_ci, "wins": cmp["wins"], "ties": cmp["ties"], "losses": cmp["losses"],
        "base_std_over_seeds": base["std_over_seeds"], "aligned_std_over_seeds": aligned["std_over_seeds"],
        "gain_std_over_seeds": gain_std, "gain_standard_error": cmp["gain_standard_error"],
        "gain_over_seed_std": cmp["mean_gain"] / seed_std if seed_std > 0 else None,
        "num_images": base["num_images"], "num_captions": len(base["captions"]), "seeds": list(base["seeds"]),
        "captions": settings.captions, "num_inference_steps": settings.num_inference_steps,
        "guidance_scale": settings.guidance_scale, "base": _model_row(base), "aligned": _model_row(aligned),
    }


def format_table(summary: dict[str, Any]) -> str:
    """A short human-readable table of :func:`summarize`'s block."""
    ratio = summary["gain_over_seed_std"]
    se = summary["gain_standard_error"]
    lines = [
        f"toy eval: judge score in [0, 1] on {summary['num_captions']} {summary['captions']} captions x "
        f"{len(summary['seeds'])} seeds = {summary['num_images']} images per model",
        f"  {'model':<10}{'mean':>9}{'std over sampling seeds':>26}",
        f"  {'base':<10}{summary['base_mean']:>9.4f}{summary['base_std_over_seeds']:>26.4f}",
        f"  {'aligned':<10}{summary['aligned_mean']:>9.4f}{summary['aligned_std_over_seeds']:>26.4f}",
        f"  {'gain':<10}{summary['mean_gain']:>+9.4f}{summary['gain_std_over_seeds']:>26.4f}"
        + (f"   (gain / model seed std = {ratio:.1f})" if ratio is not None else ""),
        f"  gain {summary['mean_gain']:+.4f} +- {se:.4f} (paired standard error over {summary['num_images']} "
        f"images: gain / SE = {summary['mean_gain'] / se if se > 0 else float('inf'):.1f})",
        f"  win rate of aligned over base: {100 * summary['win_rate']:.1f}% "
        f"[{100 * summary['win_rate_ci95'][0]:.1f}, {100 * summary['win_rate_ci95'][1]:.1f}] "
        f"({summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses)",
    ]
    return "\n".join(lines)


def grid_indices(num_images: int, max_items: int) -> list[int]:
    """At most ``max_items`` image indices spread evenly over all (caption, seed) images (not only the first
    captions, which share attributes)."""
    if num_images <= max_items:
        return list(range(num_images))
    return sorted({int(round(x)) for x in np.linspace(0, num_images - 1, max_items)})


def run_toy_eval(cfg: DiffusionRecipeConfig, pipe, unet, reference: ReferenceProvider, output_dir: str | Path,
                 autocast=nullcontext, print_fn=print) -> dict[str, Any]:
    """Evaluate base and aligned (``pipe`` holds the trained ``unet``), write the files, return the summary block."""
    from mmalign.toy.evaluate import save_side_by_side_grid

    settings = cfg.toy_eval
    captions = eval_captions(settings)
    out = Path(output_dir) / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    bare = unwrap(unet)
    was_training = bare.training
    bare.eval()
    setattr(pipe, _denoiser_name(pipe), bare)
    pipe.set_progress_bar_config(disable=True)
    try:
        with base_model(pipe, reference, cfg.lora.rank > 0, cfg.model.pretrained, cfg.model.revision) as base_pipe:
            base = _evaluate(base_pipe, captions, settings, autocast, "base")
        aligned = _evaluate(pipe, captions, settings, autocast, "aligned")
    finally:
        bare.train(was_training)
    summary = summarize(base, aligned, settings)
    labels = [f"{c} (seed {s})" for c in captions for s in settings.seeds]
    shown = grid_indices(len(labels), settings.grid_rows * settings.grid_columns)
    summary["grid"] = str(save_side_by_side_grid(
        base["images"][shown], aligned["images"][shown], out / GRID_FILE, captions=[labels[i] for i in shown],
        columns=settings.grid_columns, max_items=len(shown)))
    (out / SCORES_FILE).write_text(json.dumps(
        {"captions": captions, "seeds": list(settings.seeds), "order": "caption-major (caption_index * n_seeds + seed_index)",
         "base": base["scores"], "aligned": aligned["scores"]}))
    summary["scores"] = str(out / SCORES_FILE)
    if settings.save_images:
        np.savez_compressed(out / IMAGES_FILE, base=base["images"], aligned=aligned["images"])
        summary["images"] = str(out / IMAGES_FILE)
    print_fn(format_table(summary))
    written = [summary[k] for k in ("grid", "scores", "images") if k in summary]
    print_fn(f"toy eval: {len(captions)} captions x {len(settings.seeds)} seeds per model; wrote {', '.join(written)}")
    return summary
