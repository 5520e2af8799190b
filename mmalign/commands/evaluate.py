"""``mmalign evaluate <aligned> [--base <pipeline>] --scorer <name[,name...]> --prompts <file|set> --out <dir>``.

Generates one image per (prompt, seed) from the base and from the aligned model with the same generator per image,
scores both with every scorer, and reports per scorer the mean ± 95 % interval of each model, the win rate of
aligned over base (ties half) with a paired bootstrap interval, and a per-category breakdown where the set has
categories. ``<aligned>``: a run folder (base = its ``model.pretrained``), a LoRA folder / file or a pipeline folder
(:mod:`mmalign.evaluation.models`); prompts: ``parti``, ``toy-heldout``, ``toy-all``, a ``.txt`` / ``.jsonl`` /
``.tsv`` file or an HPDv2 benchmark folder (:mod:`mmalign.evaluation.prompts`); scorers: every card of
``scorers/cards`` plus ``toy-judge`` (the toy world's judge, the ground truth ``toy_eval`` reports).

Writes to ``--out``: ``images/{base,aligned}/<k>.png``, ``eval.json``, ``scores.jsonl``, ``report.html`` with
``plots/*.png`` and ``grids/*.png``. A second run into the same folder reuses the saved images. Under
``accelerate launch`` (or ``torchrun``) the images are split across the processes. Steps:
:mod:`mmalign.evaluation.runner`.
"""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "Compare an aligned text-to-image model with its base: shared seeds, several scorers, win rates, a report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mmalign.commands._options import add_guidance_argument, add_out_argument
    from scorers.options import add_scorer_arguments

    parser.add_argument("aligned", help="run folder, LoRA folder / .safetensors file, or pipeline folder")
    parser.add_argument("--base", default=None,
                        help="base pipeline folder or hub id (default: the run's model.pretrained)")
    parser.add_argument("--prompts", "--prompt", dest="prompts", required=True,
                        help="parti | toy-heldout | toy-all | a .txt / .jsonl / .tsv file | an HPDv2 benchmark folder")
    parser.add_argument("--category-key", default="category",
                        help="category field of .jsonl / .tsv rows (parti: Category, or Challenge)")
    parser.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts")
    add_scorer_arguments(parser, multiple=True)
    add_out_argument(parser, "output folder (images/, eval.json, scores.jsonl, report.html)")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated sampling seeds; each prompt is sampled once per seed (generator seed "
                        "= seed * 1000003 + prompt index, as toy_eval)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps")
    add_guidance_argument(parser)
    parser.add_argument("--height", type=int, default=None, help="image height (default: the pipeline's)")
    parser.add_argument("--width", type=int, default=None, help="image width (default: the pipeline's)")
    parser.add_argument("--pipeline-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="dtype of the generating pipelines")
    parser.add_argument("--images-per-batch", type=int, default=8, help="images per pipeline call")
    parser.add_argument("--tie-margin", type=float, default=0.0,
                        help="|aligned - base| <= margin counts as a tie (half a win)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples of the prompts")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument("--grid-size", type=int, default=24, help="base | aligned pairs in the sample grid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.epilog = ("--scorer takes every card name above plus toy-judge (the toy world's judge, the ground truth "
                     "toy_eval reports). Under accelerate launch / torchrun the images are split across processes; "
                     "a second run into the same --out reuses the saved images.")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: give distinct non-negative integers")
    return seeds


def _check_ranges(args: argparse.Namespace) -> None:
    for flag, value, low in (("--steps", args.steps, 1), ("--images-per-batch", args.images_per_batch, 1),
                             ("--batch-size", args.batch_size, 1), ("--bootstrap", args.bootstrap, 1),
                             ("--grid-size", args.grid_size, 1), ("--height", args.height or 8, 8),
                             ("--width", args.width or 8, 8), ("--max-prompts", args.max_prompts or 1, 1)):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.tie_margin < 0 or args.guidance_scale < 0:
        raise ValueError("--tie-margin and --guidance-scale must be >= 0")


def settings_from_args(args: argparse.Namespace):
    """Every check that needs no model: ``(models, prompts, settings)`` or a ValueError / FileNotFoundError."""
    from mmalign.evaluation.models import resolve_models
    from mmalign.evaluation.prompts import load_prompt_set
    from mmalign.evaluation.runner import EvalSettings, Sampler
    from mmalign.evaluation.scoring import check_scorer_names
    from scorers.devices import resolve_device
    from scorers.options import parse_scorer_args, split_scorer_names

    names = split_scorer_names(args.scorer)
    check_scorer_names(names)
    per = parse_scorer_args(names, args.scorer_arg)
    if args.checkpoint is not None:
        if len(names) > 1:
            raise ValueError("--checkpoint is ambiguous with several scorers; use --scorer-arg NAME.checkpoint=PATH")
        per[names[0]].setdefault("checkpoint", args.checkpoint)
    _check_ranges(args)
    seeds = _seeds(args.seeds)
    prompts = load_prompt_set(args.prompts, args.category_key).head(args.max_prompts)
    models = resolve_models(args.aligned, args.base)
    device = resolve_device(args.device)
    kwargs = {n: {"dtype": args.dtype, "autocast": args.autocast, **per[n]} for n in names}
    sampler = Sampler(num_inference_steps=args.steps, guidance_scale=args.guidance_scale, height=args.height,
                      width=args.width, pipeline_dtype=args.pipeline_dtype)
    settings = EvalSettings(out=args.out, scorer_names=names, scorer_kwargs=kwargs, seeds=seeds, sampler=sampler,
                            images_per_batch=args.images_per_batch, score_batch_size=args.batch_size, device=device,
                            tie_margin=args.tie_margin, n_boot=args.bootstrap, bootstrap_seed=args.bootstrap_seed,
                            grid_size=args.grid_size, progress=not args.no_progress)
    return models, prompts, settings


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    models, prompts, settings = settings_from_args(args)  # bad input: one line, exit 2, before any model loads

    from pathlib import Path

    from mmalign.evaluation.runner import check_resume, identity, run_evaluation

    check_resume(Path(settings.out), identity(models, prompts, settings))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, barrier = 0, (lambda: None)
    if world > 1:  # accelerate launch / torchrun: split the images across the processes
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=not torch.accelerator.is_available())
        rank, world, barrier = state.process_index, state.num_processes, state.wait_for_everyone
        settings.device = str(state.device)
    result = run_evaluation(models, prompts, settings, rank=rank, world=world, barrier=barrier)
    if result is not None:
        print(f"mmalign evaluate: wrote {Path(settings.out) / 'eval.json'} and {Path(settings.out) / 'report.html'}",
              file=sys.stderr)
    return 0
