"""``mmalign label --pipeline <dir> --prompts <file> --per-prompt K --scorer <name>[,<name>...] --out <dir>``.

Synthetic preference labelling (RankDPO's recipe: generate K images per prompt, rank them with an averaged scorer
ensemble). Steps:

1. ``DiffusionPipeline.from_pretrained(--pipeline)`` generates K images per prompt (seed ``--seed + prompt index``
   per prompt, so a run is reproducible and prompts are independent of batching).
2. Every scorer scores every image; each scorer's scores are normalised **within the K candidates of a prompt**
   (``--normalize zscore`` default, ``rank`` or ``none``; see :mod:`scorers.ensemble`) and averaged.
3. Written to ``--out`` (alias ``--output``):
   * ``ranked.jsonl`` (+ ``images/``): ``{"prompt", "images", "scores"}`` with ``scores`` = ensemble scores, plus
     ``scorer_scores`` (raw per-scorer scores) — read with ``load_preference_data(path, "ranked")``;
   * ``pairs.parquet``: Pick-a-Pic v2 schema (``caption, jpg_0, jpg_1, label_0, ...``) — ``--pairs best-worst``
     (default: one pair per prompt, best vs worst) or ``all`` (every one of the K(K-1)/2 pairs); images keep
     their generation order (``jpg_0`` is the lower index), ``label_0`` is 1 / 0 by ensemble score, 0.5 on an exact
     tie (which the loader drops, as official Diffusion-DPO does) — read with ``load_preference_data(path)``;
   * ``label_summary.json``: arguments, counts, per-scorer mean scores.

Scorer options go through ``--scorer-arg NAME.KEY=VALUE`` (checkpoint, card overrides such as a tiny ``arch``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "label"
HELP = "Generate K images per prompt with a diffusers pipeline and label preferences with a scorer ensemble."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mmalign.commands._options import add_guidance_argument, add_out_argument
    from scorers.ensemble import NORMALIZATIONS
    from scorers.options import add_scorer_arguments

    parser.add_argument("--pipeline", required=True, help="diffusers pipeline folder (or hub id when online)")
    parser.add_argument("--prompts", "--prompt", dest="prompts", required=True,
                        help=".txt file, one prompt per line (blank lines ignored)")
    parser.add_argument("--per-prompt", type=int, required=True, help="K images generated per prompt (>= 2)")
    add_scorer_arguments(parser, multiple=True)
    add_out_argument(parser, "output folder (ranked.jsonl, pairs.parquet, images/)")
    parser.add_argument("--normalize", default="zscore", choices=list(NORMALIZATIONS),
                        help="per-prompt normalisation of each scorer before averaging")
    parser.add_argument("--pairs", default="best-worst", choices=["best-worst", "all"], help="pairs per prompt")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps")
    add_guidance_argument(parser)
    parser.add_argument("--height", type=int, default=None, help="image height (default: the pipeline's)")
    parser.add_argument("--width", type=int, default=None, help="image width (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (prompt i uses seed + i)")
    parser.add_argument("--pipeline-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="dtype of the generating pipeline")
    parser.add_argument("--prompts-per-batch", type=int, default=1, help="prompts per pipeline call")


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def generate(pipe, prompts: list[str], k: int, args) -> list[list]:
    """K PIL images per prompt (prompt-major), one generator per image seeded from the prompt's index."""
    import torch
    from tqdm.auto import tqdm

    from mmalign.diffusion.sampling import generate as generate_images

    out: list[list] = []
    step = max(1, args.prompts_per_batch)
    for start in tqdm(range(0, len(prompts), step), desc="generate", unit="batch"):
        chunk = prompts[start : start + step]
        generators = []
        for i in range(len(chunk)):
            g = torch.Generator(device="cpu").manual_seed(args.seed + start + i)
            generators.extend([g] * k)  # one stream per prompt: draws for its K images come from it in order
        kwargs = {"height": args.height, "width": args.width} if args.height or args.width else {}
        images = generate_images(pipe, chunk, num_images_per_prompt=k, num_inference_steps=args.steps,
                                 guidance_scale=args.guidance_scale, generator=generators, **kwargs)
        if len(images) != len(chunk) * k:
            raise RuntimeError(f"pipeline returned {len(images)} images for {len(chunk)} prompts x {k}")
        out.extend(images[i * k : (i + 1) * k] for i in range(len(chunk)))
    return out


def make_pairs(prompt: str, images: list, scores: list[float], mode: str) -> list[dict]:
    """Pick-a-Pic rows for one prompt (``jpg_0`` = lower generation index; label by ensemble score)."""
    k = len(images)
    if mode == "best-worst":
        best = max(range(k), key=lambda i: scores[i])
        worst = min(range(k), key=lambda i: scores[i])
        index_pairs = [(min(best, worst), max(best, worst))] if best != worst else [(0, 1)]
    else:
        index_pairs = [(i, j) for i in range(k - 1) for j in range(i + 1, k)]
    rows = []
    for i, j in index_pairs:
        label = 1.0 if scores[i] > scores[j] else 0.0 if scores[i] < scores[j] else 0.5
        rows.append({"caption": prompt, "jpg_0": images[i], "jpg_1": images[j], "label_0": label,
                     "has_label": True, "are_different": True})
    return rows


def run(args: argparse.Namespace) -> int:
    import torch
    from diffusers import DiffusionPipeline

    from mmalign.data import write_pickapic_parquet, write_ranked_jsonl
    from scorers.ensemble import ensemble_scores
    from scorers.options import load_scorers_from_args

    if args.per_prompt < 2:
        raise ValueError("--per-prompt must be at least 2 to form preferences")
    prompts = read_prompt_file(args.prompts)
    scorer_map = load_scorers_from_args(args)  # fail on scorer options before the (slow) generation
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from scorers.devices import resolve_device

    device = torch.device(resolve_device(args.device))
    pipe = DiffusionPipeline.from_pretrained(args.pipeline, torch_dtype=getattr(torch, args.pipeline_dtype))
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    k = args.per_prompt
    images = generate(pipe, prompts, k, args)
    del pipe

    flat_images = [im for group in images for im in group]
    flat_prompts = [p for p in prompts for _ in range(k)]
    per_scorer = {}
    for name, scorer in scorer_map.items():
        texts = flat_prompts if scorer.needs_text else None
        per_scorer[name] = scorer.score(flat_images, texts, batch_size=args.batch_size).view(len(prompts), k)
    ensemble = ensemble_scores(per_scorer, args.normalize)

    ranked_rows, pair_rows = [], []
    for p, prompt in enumerate(prompts):
        scores = [float(x) for x in ensemble[p]]
        ranked_rows.append({"prompt": prompt, "images": images[p], "scores": scores,
                            "scorer_scores": {n: [float(x) for x in v[p]] for n, v in per_scorer.items()},
                            "seed": args.seed + p})
        pair_rows.extend(make_pairs(prompt, images[p], scores, args.pairs))
    ranked_path = write_ranked_jsonl(ranked_rows, out_dir / "ranked.jsonl")
    pairs_path = write_pickapic_parquet(pair_rows, out_dir / "pairs.parquet")
    summary = {
        "ranked": str(ranked_path), "pairs": str(pairs_path), "prompts": len(prompts), "per_prompt": k,
        "n_pairs": len(pair_rows), "n_tied_pairs": sum(r["label_0"] == 0.5 for r in pair_rows),
        "scorers": list(scorer_map), "normalize": args.normalize, "pairs_mode": args.pairs,
        "mean_scores": {n: float(v.mean()) for n, v in per_scorer.items()},
        "pipeline": str(args.pipeline), "steps": args.steps, "guidance_scale": args.guidance_scale, "seed": args.seed,
    }
    (out_dir / "label_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0
