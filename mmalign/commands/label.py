"""``mmalign label --pipeline <dir> --prompts <file> --per-prompt K --scorer <name>[,<name>...] --out <dir>``.

Synthetic preference labelling (RankDPO's recipe: generate K images per prompt, rank them with an averaged scorer
ensemble). Steps:

1. ``DiffusionPipeline.from_pretrained(--pipeline)`` generates K images per prompt (seed ``--seed + prompt index``
   per prompt, so a run is reproducible and prompts are independent of batching).
2. Every scorer scores every image; each scorer's scores are normalised **within the K candidates of a prompt**
   (``--normalize zscore`` default, ``rank`` or ``none``; see :mod:`scorers.ensemble`) and averaged.
3. Written to ``--out`` (alias ``--output``) as the run goes: after each batch of prompts its images (``images/``,
   PNG named by content) and one row per prompt (raw per-scorer scores) in ``label_progress.jsonl``. An interrupted
   run (Ctrl-C: exit 130) keeps what it finished; the same command again continues from it, batch by batch as an
   uninterrupted run, so the results are identical (other generation or scorer settings in the same ``--out`` are
   refused; ``--normalize`` and ``--pairs`` only shape the files below and may change). At the end:
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
import sys
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


def generate(pipe, prompts: list[str], k: int, args, offset: int = 0) -> list[list]:
    """K PIL images per prompt (prompt-major), one generator per image seeded from the prompt's index (``offset``:
    the index of ``prompts[0]`` in the prompts file)."""
    import torch
    from tqdm.auto import tqdm

    from mmalign.diffusion.sampling import generate as generate_images

    out: list[list] = []
    step = max(1, args.prompts_per_batch)
    for start in tqdm(range(0, len(prompts), step), desc="generate", unit="batch", disable=len(prompts) <= step):
        chunk = prompts[start : start + step]
        generators = []
        for i in range(len(chunk)):
            g = torch.Generator(device="cpu").manual_seed(args.seed + offset + start + i)
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


PROGRESS_FILE = "label_progress.jsonl"
"""Written as the run goes: a header line (the settings that decide the images and scores), then one line per
finished prompt (its image files and raw per-scorer scores). A rerun with the same settings continues from it."""
INTERRUPTED_EXIT = 130


def progress_settings(args: argparse.Namespace, prompts: list[str], device: str) -> dict:
    """What decides a prompt's images and raw scores (``--normalize`` / ``--pairs`` only shape the final files)."""
    import hashlib

    return {"pipeline": str(args.pipeline), "prompts_sha1": hashlib.sha1("\n".join(prompts).encode()).hexdigest(),
            "prompts": len(prompts), "per_prompt": args.per_prompt, "seed": args.seed, "steps": args.steps,
            "guidance_scale": args.guidance_scale, "height": args.height, "width": args.width,
            "pipeline_dtype": args.pipeline_dtype, "prompts_per_batch": max(1, args.prompts_per_batch),
            "scorer": args.scorer, "scorer_arg": sorted(args.scorer_arg), "checkpoint": args.checkpoint,
            "dtype": args.dtype, "autocast": args.autocast, "batch_size": args.batch_size, "device": device}


def read_progress(path: Path, settings: dict) -> dict[int, dict]:
    """The finished prompts of an earlier run into the same ``--out`` (``{}`` when there is none); a run with other
    settings is refused (its images would not be the ones these arguments make)."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except ValueError:
        header = {}
    if header.get("settings") != settings:
        theirs = header.get("settings") or {}
        changed = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
        detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {settings.get(k)!r} now" for k in changed[:4])
        raise ValueError(f"--out {path.parent} holds a labelling run with other settings ({detail or 'unreadable'}); "
                         f"rerun with the same arguments to continue it, or choose another --out")
    done: dict[int, dict] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last line of a killed run, half written: that prompt is redone
                break
            raise ValueError(f"{path}: line {number} is not valid JSON") from None
        if all((path.parent / image).is_file() for image in row["images"]):
            done[int(row["index"])] = row
    return done


def _save_png(image, folder: Path, root: Path) -> str:
    """``image`` as ``<folder>/<content key>.png`` (atomic); its path relative to ``root``."""
    import os

    from mmalign.data import image_key
    from mmalign.data.images import encode_image

    data = encode_image(image, "PNG")
    target = folder / f"{image_key(data)}.png"
    if not target.is_file():
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return os.path.relpath(target, root)


def run(args: argparse.Namespace) -> int:
    import torch
    from diffusers import DiffusionPipeline

    from mmalign.data import write_pickapic_parquet, write_ranked_jsonl
    from scorers.options import load_scorers_from_args
    from scorers.reward import Reward

    if args.per_prompt < 2:
        raise ValueError("--per-prompt must be at least 2 to form preferences")
    prompts = read_prompt_file(args.prompts)
    scorer_map = load_scorers_from_args(args)  # fail on scorer options before the (slow) generation
    # the ensemble: each scorer normalised within a prompt's K candidates (--normalize), weights 1/n
    reward = Reward(scorer_map, {name: 1 / len(scorer_map) for name in scorer_map}, normalize=args.normalize,
                    batch_size=args.batch_size)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    from scorers.devices import resolve_device

    device = torch.device(resolve_device(args.device))
    k, step = args.per_prompt, max(1, args.prompts_per_batch)
    settings = progress_settings(args, prompts, str(device))
    progress_path = out_dir / PROGRESS_FILE
    done = read_progress(progress_path, settings)  # before loading the pipeline: a mismatch fails fast
    if done:
        print(f"resuming: {len(done)}/{len(prompts)} prompts already labelled in {progress_path}", file=sys.stderr)
    todo = [start for start in range(0, len(prompts), step)
            if any(i not in done for i in range(start, min(start + step, len(prompts))))]
    if todo:
        image_dir = out_dir / "images"
        image_dir.mkdir(exist_ok=True)
        pipe = DiffusionPipeline.from_pretrained(args.pipeline, torch_dtype=getattr(torch, args.pipeline_dtype))
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        import os

        from tqdm.auto import tqdm

        tmp = progress_path.with_name(progress_path.name + ".tmp")  # rewritten whole: drops a half-written line
        tmp.write_text("".join(json.dumps(r) + "\n" for r in [{"settings": settings}, *map(done.get, sorted(done))]),
                       encoding="utf-8")
        os.replace(tmp, progress_path)
        with open(progress_path, "a", encoding="utf-8") as fh:
            try:
                for start in tqdm(todo, desc="label", unit="batch"):  # the batches of an uninterrupted run
                    _label_batch(pipe, prompts, start, step, k, args, reward, image_dir, out_dir, done, fh)
            except KeyboardInterrupt:
                print(f"mmalign label: interrupted after {len(done)}/{len(prompts)} prompts; their images and rows "
                      f"are kept in {progress_path}: run the same command again to continue", file=sys.stderr)
                return INTERRUPTED_EXIT
        del pipe

    rows = [done[i] for i in range(len(prompts))]
    per_scorer = {name: torch.tensor([row["scorer_scores"][name] for row in rows], dtype=torch.float32)
                  for name in scorer_map}
    ensemble = reward.combine({n: v.view(-1) for n, v in per_scorer.items()}, group_size=k).view(len(rows), k)
    ranked_rows, pair_rows = [], []
    for p, row in enumerate(rows):
        scores = [float(x) for x in ensemble[p]]
        images = [str(out_dir / image) for image in row["images"]]
        ranked_rows.append({"prompt": row["prompt"], "images": images, "scores": scores,
                            "scorer_scores": row["scorer_scores"], "seed": row["seed"]})
        pair_rows.extend(make_pairs(row["prompt"], images, scores, args.pairs))
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


def _label_batch(pipe, prompts: list[str], start: int, step: int, k: int, args, reward, image_dir: Path,
                 out_dir: Path, done: dict[int, dict], fh) -> None:
    """Generate and score one batch of prompts; write its images, then append one row per prompt (fsync'ed)."""
    import os

    chunk = prompts[start : start + step]
    images = generate(pipe, chunk, k, args, offset=start)  # one pipeline call: len(chunk) <= prompts_per_batch
    flat = [im for group in images for im in group]
    texts = [p for p in chunk for _ in range(k)]
    scores = {name: values.view(len(chunk), k).tolist()  # raw per-scorer scores; combined at the end
              for name, values in reward(flat, texts, group_size=k).terms.items()}
    for j, prompt in enumerate(chunk):
        index = start + j
        row = {"index": index, "prompt": prompt, "seed": args.seed + index,
               "images": [_save_png(im, image_dir, out_dir) for im in images[j]],
               "scorer_scores": {name: [float(x) for x in values[j]] for name, values in scores.items()}}
        fh.write(json.dumps(row) + "\n")
        done[index] = row
    fh.flush()
    os.fsync(fh.fileno())
