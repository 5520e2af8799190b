"""Toy-world alignment quality per diffusion objective (issue 5): same base, data budget and evaluation for all.

    python bench/toy_quality.py [--methods dpo,sft,...] [--seeds 0,1,2] [--steps N] [--jobs 2]
    python bench/toy_quality.py --methods 'smpo[method.smpo.order=human],inpo[method.beta=5000]' \
        --section toy_quality_ablations --plot bench/toy_quality_ablations.png      # variants: recipe overrides

For every method and training seed: train a LoRA on the shipped toy pipeline (``assets/toy/pipeline``) with the
diffusion recipe (``recipes/diffusion.py``, subprocess), the method's data set from ``assets/toy/data`` (pairs,
dual captions for DCPO, ranked lists for RankDPO, unpaired labels for KTO) and the method block of its shipped
config (``toy_<m>.yaml``, else ``sd15_``/``sd21_``/``sdxl_<m>.yaml``: the official beta and method options), with
identical steps / batch size / learning rate / LoRA rank for all; then sample the held-out captions x eval seeds
and score with the judge (``mmalign.toy.evaluate``). Reports per method: mean judge score over training seeds, the
seed-to-seed std, win rate vs base (ties half) and the mean gain, and whether the gain exceeds 3x the seed std.

The defaults are read from ``toy_dpo.yaml`` (the main job's budget: steps, pairs per step, learning rate, LoRA rank,
DDIM steps at evaluation), so the table measures every objective at exactly the budget the README's main job uses;
each run's LoRA, log and judge scores stay in ``--out`` so an interrupted bench resumes where it stopped.
Prints one JSON line per (method, seed); writes a dated markdown table into its own section of ``bench/RESULTS.md``
(replacing the previous one) and a bar plot PNG (``--plot``). Not run by CI (about 3 CPU-minutes per (method,
seed) run with one thread; seconds on a GPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results_section import replace_section  # noqa: E402
from mmalign.diffusion.registry import METHODS  # noqa: E402
from mmalign.toy import paths  # noqa: E402
from mmalign.toy.evaluate import compare, evaluate_pipeline  # noqa: E402

CONFIGS = REPO / "recipes" / "configs" / "diffusion"
DATA_FILE = {"dcpo": "dual_captions.parquet", "rankdpo": "ranked.jsonl", "kto": "unpaired.jsonl"}
DEFAULT_METHODS = tuple(m for m in METHODS if m != "ppd")  # PPD: per-user evaluation (bench/ppd_opposed_users.py)


def main_job_budget() -> dict:
    """``toy_dpo.yaml``'s training and evaluation budget: the defaults of every run of this bench."""
    cfg = yaml.safe_load((CONFIGS / "toy_dpo.yaml").read_text())
    return {"steps": cfg["train"]["max_steps"], "batch_size": cfg["train"]["batch_size"], "lr": cfg["train"]["lr"],
            "rank": cfg["lora"]["rank"], "num_inference_steps": cfg["eval"]["num_inference_steps"]}


def method_block(method: str) -> dict:
    """The ``method:`` section of the method's shipped config (toy first, then SD1.5 / SD2.1 / SDXL)."""
    for prefix in ("toy", "sd15", "sd21", "sdxl"):
        path = CONFIGS / f"{prefix}_{method}.yaml"
        if path.is_file():
            return dict((yaml.safe_load(path.read_text()) or {}).get("method", {}) or {})
    return {"name": method}


def _flatten(prefix: str, d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(f"{prefix}{k}.", v)
        elif v is not None and not isinstance(v, list):
            out.append(f"{prefix}{k}={v}")
    return out


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``"smpo[method.smpo.order=human;method.beta=5000]"`` -> ``("smpo", ["method.smpo.order=human", ...])``: a
    method plus recipe overrides applied after its config's method block (a plain name has none)."""
    name, _, rest = spec.partition("[")
    if rest and not rest.endswith("]"):
        raise ValueError(f"--methods: '{spec}' is not NAME or NAME[key=value;...]")
    overrides = [o.strip() for o in rest[:-1].split(";") if o.strip()] if rest else []
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"--methods: '{spec}': overrides must be key=value, got {bad}")
    return name.strip(), overrides


def run_name(spec: str) -> str:
    """A folder name for a method variant (``smpo[method.smpo.order=human]`` -> ``smpo-method.smpo.order-human``)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", spec).strip("-")


def train_one(spec: str, seed: int, args, out: Path) -> Path:
    """Train one LoRA with the recipe (subprocess, one CPU thread); reuses a finished run unless ``--retrain``."""
    method, variant_overrides = parse_variant(spec)
    run_dir = out / f"{run_name(spec)}_seed{seed}"
    if (run_dir / "pytorch_lora_weights.safetensors").is_file() and not args.retrain:
        return run_dir
    block = method_block(method)
    block["name"] = method
    overrides = [
        f"model.pretrained={paths.pipeline_dir()}", f"data.path={paths.data_dir() / DATA_FILE.get(method, 'pairs.parquet')}",
        "data.resolution=64", f"data.cache_dir={out / 'cache' / run_name(spec)}", f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", "train.lr_scheduler=constant",
        f"train.seed={seed}", f"lora.rank={args.rank}", "validation.prompts=[]", f"output_dir={run_dir}",
        "train.progress_bar=false", "train.log_every=50", "eval.enabled=false",  # evaluated below instead
    ] + _flatten("method.", block) + variant_overrides
    from mmalign.diffusion.registry import switch_method  # toy_dpo.yaml without what the method does not read

    base = out / "configs" / f"toy_dpo_as_{method}.yaml"
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_text(yaml.safe_dump(switch_method(yaml.safe_load((CONFIGS / "toy_dpo.yaml").read_text()), method)))
    cmd = [sys.executable, str(REPO / "recipes" / "diffusion.py"), "--config", str(base), *overrides]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    return run_dir


def evaluate(run_dir: Path | None, captions: list[str], eval_seeds: list[int], steps: int) -> dict:
    """Judge evaluation of the base (``run_dir=None``) or base + the run's LoRA; cached in ``eval.json``."""
    cache = (run_dir / "eval.json") if run_dir is not None else None
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["captions"] == captions and cached["seeds"] == eval_seeds and cached["steps"] == steps:
            return cached
    from mmalign.toy.build import load_pipeline

    pipe = load_pipeline(paths.pipeline_dir())
    if run_dir is not None:
        pipe.load_lora_weights(str(run_dir))
    result = evaluate_pipeline(pipe, captions, eval_seeds, num_inference_steps=steps)
    kept = {k: result[k] for k in ("mean", "scores", "terms", "per_seed", "std_over_seeds", "captions", "seeds")}
    kept["steps"] = steps
    if cache is not None:
        cache.write_text(json.dumps(kept))
    return kept


def run_job(method: str, seed: int, args, out: Path, captions: list[str], eval_seeds: list[int]) -> dict:
    """One (method, training seed): train, then evaluate; runs in a worker process with one torch thread."""
    import torch

    torch.set_num_threads(1)
    started = time.time()
    run_dir = train_one(method, seed, args, out)
    result = evaluate(run_dir, captions, eval_seeds, args.num_inference_steps)
    result["seconds"] = round(time.time() - started, 1)
    return result


def summarize_method(method: str, per_seed: list[dict]) -> dict:
    """Mean over training seeds, their std (ddof 1), win rate and gain vs base, and gain > 3 x std."""
    means = np.array([c["aligned_mean"] for c in per_seed])
    std = float(means.std(ddof=1)) if len(means) > 1 else float("nan")
    gain = float(np.mean([c["mean_gain"] for c in per_seed]))
    return {"method": method, "seeds": len(per_seed), "judge_mean": float(means.mean()), "seed_std": std,
            "win_rate": float(np.mean([c["win_rate"] for c in per_seed])), "mean_gain": gain,
            "gain_gt_3std": bool(gain > 3 * std) if std == std else None}


def main() -> None:
    budget = main_job_budget()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (>= 3 for the spread)")
    parser.add_argument("--eval-seeds", default="0,1", help="sampling seeds per held-out caption")
    parser.add_argument("--steps", type=int, default=budget["steps"], help="optimizer steps (default: toy_dpo.yaml)")
    parser.add_argument("--batch-size", type=int, default=budget["batch_size"], help="pairs per step")
    parser.add_argument("--lr", type=float, default=budget["lr"])
    parser.add_argument("--rank", type=int, default=budget["rank"])
    parser.add_argument("--num-inference-steps", type=int, default=budget["num_inference_steps"])
    parser.add_argument("--jobs", type=int, default=1, help="(method, seed) runs at once, one CPU thread each")
    parser.add_argument("--out", default=str(REPO / "outputs" / "toy_quality"))
    parser.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--plot", default=str(REPO / "bench" / "toy_quality.png"))
    parser.add_argument("--section", default="toy_quality", help="the RESULTS.md section this run rewrites")
    parser.add_argument("--retrain", action="store_true", help="retrain runs whose LoRA already exists")
    args = parser.parse_args()
    out = Path(args.out)
    methods = [m for m in re.split(r",(?![^\[]*\])", args.methods) if m]  # commas inside [...] are overrides
    for spec in methods:
        parse_variant(spec)  # fail before any training on a malformed variant
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    captions = paths.read_captions(paths.assets_dir() / paths.HELDOUT_CAPTIONS)

    jobs = [(m, s) for m in methods for s in seeds]
    results: dict[tuple[str, int], dict] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        base_future = pool.submit(evaluate, None, captions, eval_seeds, args.num_inference_steps)
        futures = {pool.submit(run_job, m, s, args, out, captions, eval_seeds): (m, s) for m, s in jobs}
        base = base_future.result()
        print(json.dumps({"method": "base", "judge_mean": base["mean"], "terms": base["terms"]}), flush=True)
        for future in as_completed(futures):
            method, seed = futures[future]
            try:
                aligned = future.result()
            except subprocess.CalledProcessError as exc:
                print(json.dumps({"method": method, "seed": seed, "error": f"recipe failed ({exc.returncode})"}),
                      flush=True)
                continue
            cmp = compare(base, aligned)
            results[method, seed] = cmp
            print(json.dumps({"method": method, "seed": seed, **cmp, "terms": aligned["terms"],
                              "seconds": aligned.get("seconds")}), flush=True)
    rows = []
    for method in methods:
        per_seed = [results[method, s] for s in seeds if (method, s) in results]
        rows.append(summarize_method(method, per_seed) if per_seed else {"method": method, "error": "no run finished"})
    write_results(rows, base["mean"], args, len(captions), eval_seeds)
    plot(rows, base["mean"], Path(args.plot))


def write_results(rows: list[dict], base_mean: float, args, n_captions: int, eval_seeds: list[int]) -> None:
    date = datetime.date.today().isoformat()
    lines = [
        f"## Toy-world alignment quality{'' if args.section == 'toy_quality' else ': ' + args.section} "
        f"({date}, CPU {platform.processor() or platform.machine()}, "
        f"`bench/toy_quality.py`)\n",
        f"Base: `assets/toy/pipeline` (judge mean {base_mean:.4f}); evaluation on {n_captions} held-out captions x "
        f"{len(eval_seeds)} seeds, {args.num_inference_steps} DDIM steps; LoRA rank {args.rank}, {args.steps} steps x "
        f"batch {args.batch_size}, lr {args.lr}, training seeds {args.seeds}.\n",
        "| method | seeds | judge mean | seed std | win rate vs base | mean gain | gain > 3 std |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | 0 | — | — | — | — | {r['error']} |")
        else:
            lines.append(f"| {r['method']} | {r['seeds']} | {r['judge_mean']:.4f} | {r['seed_std']:.4f} | "
                         f"{r['win_rate']:.3f} | {r['mean_gain']:+.4f} | {r['gain_gt_3std']} |")
    lines.append(f"\n![toy quality per objective]({Path(args.plot).name})")
    replace_section(Path(args.results), args.section, "\n".join(lines), title="(bench/toy_quality.py, issue #5)")
    print("\n".join(lines))


def plot(rows: list[dict], base_mean: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(figsize=(1.2 * len(ok) + 2, 3.5))
    ax.bar([r["method"] for r in ok], [r["judge_mean"] for r in ok],
           yerr=[0 if r["seed_std"] != r["seed_std"] else r["seed_std"] for r in ok], capsize=4, color="tab:blue")
    ax.axhline(base_mean, color="k", linestyle="--", label=f"base {base_mean:.3f}")
    if max(len(r["method"]) for r in ok) > 10:  # variants: long labels
        ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("judge mean (held-out captions)")
    ax.set_title("Toy world: alignment quality per objective (mean ± seed std)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
