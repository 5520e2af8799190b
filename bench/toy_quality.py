"""Toy-world alignment quality per diffusion objective (issue 5): same base, data budget and evaluation for all.

    python bench/toy_quality.py [--methods dpo,sft,...] [--seeds 0,1,2] [--steps 200] [--out outputs/toy_quality]

For every method and training seed: train a LoRA on the shipped toy pipeline (``assets/toy/pipeline``) with the
diffusion recipe (``recipes/diffusion.py``, subprocess), the method's data set from ``assets/toy/data`` (pairs,
dual captions for DCPO, ranked lists for RankDPO, unpaired labels for KTO) and the method block of its shipped
config (``toy_<m>.yaml``, else ``sd15_``/``sd21_``/``sdxl_<m>.yaml``: the official beta and method options), with
identical steps / batch size / learning rate / LoRA rank for all; then sample the held-out captions x eval seeds
and score with the judge (``mmalign.toy.evaluate``). Reports per method: mean judge score over training seeds, the
seed-to-seed std, win rate vs base (ties half) and the mean gain, and whether the gain exceeds 3x the seed std.

Prints one JSON line per (method, seed); appends a dated markdown table to ``bench/RESULTS.md`` and writes a bar
plot PNG (``--plot``). Not run by CI (minutes per method on CPU; seconds on a GPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmalign.toy import paths  # noqa: E402
from mmalign.toy.evaluate import compare, evaluate_pipeline  # noqa: E402

CONFIGS = REPO / "recipes" / "configs" / "diffusion"
DATA_FILE = {"dcpo": "dual_captions.parquet", "rankdpo": "ranked.jsonl", "kto": "unpaired.jsonl"}
DEFAULT_METHODS = ("dpo", "sft", "mapo", "dcpo", "rankdpo", "kto", "smpo", "inpo")


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


def train_one(method: str, seed: int, args, out: Path) -> Path:
    run_dir = out / f"{method}_seed{seed}"
    if (run_dir / "pytorch_lora_weights.safetensors").is_file() and not args.retrain:
        return run_dir
    block = method_block(method)
    block["name"] = method
    overrides = [
        f"model.pretrained={paths.pipeline_dir()}", f"data.path={paths.data_dir() / DATA_FILE.get(method, 'pairs.parquet')}",
        "data.resolution=64", f"data.cache_dir={out / 'cache'}", f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", "train.lr_scheduler=constant",
        f"train.seed={seed}", f"lora.rank={args.rank}", "validation.prompts=[]", f"output_dir={run_dir}",
        "train.progress_bar=false", "train.log_every=50", "toy_eval.enabled=false",  # evaluated below instead
    ] + _flatten("method.", block)
    cmd = [sys.executable, str(REPO / "recipes" / "diffusion.py"), "--config", str(CONFIGS / "toy_dpo.yaml"), *overrides]
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
    return run_dir


def load_base():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(paths.pipeline_dir(), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (>= 3 for the spread)")
    parser.add_argument("--eval-seeds", default="0,1", help="sampling seeds per held-out caption")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--num-inference-steps", type=int, default=20)
    parser.add_argument("--out", default=str(REPO / "outputs" / "toy_quality"))
    parser.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--plot", default=str(REPO / "bench" / "toy_quality.png"))
    parser.add_argument("--retrain", action="store_true", help="retrain runs whose LoRA already exists")
    args = parser.parse_args()
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    captions = paths.read_captions(paths.assets_dir() / paths.HELDOUT_CAPTIONS)

    base_pipe = load_base()
    base = evaluate_pipeline(base_pipe, captions, eval_seeds, num_inference_steps=args.num_inference_steps)
    print(json.dumps({"method": "base", "judge_mean": base["mean"]}), flush=True)
    rows = []
    for method in methods:
        per_seed = []
        for seed in seeds:
            try:
                run_dir = train_one(method, seed, args, out)
            except subprocess.CalledProcessError as exc:
                print(json.dumps({"method": method, "seed": seed, "error": f"recipe failed ({exc.returncode})"}))
                continue
            pipe = load_base()
            pipe.load_lora_weights(str(run_dir))
            aligned = evaluate_pipeline(pipe, captions, eval_seeds, num_inference_steps=args.num_inference_steps)
            cmp = compare(base, aligned)
            per_seed.append(cmp)
            print(json.dumps({"method": method, "seed": seed, **cmp}), flush=True)
        if not per_seed:
            rows.append({"method": method, "error": "no run finished"})
            continue
        means = np.array([c["aligned_mean"] for c in per_seed])
        std = float(means.std(ddof=1)) if len(means) > 1 else float("nan")
        gain = float(np.mean([c["mean_gain"] for c in per_seed]))
        rows.append({"method": method, "seeds": len(per_seed), "judge_mean": float(means.mean()), "seed_std": std,
                     "win_rate": float(np.mean([c["win_rate"] for c in per_seed])), "mean_gain": gain,
                     "gain_gt_3std": bool(gain > 3 * std) if std == std else None})
    write_results(rows, base["mean"], args, len(captions), eval_seeds)
    plot(rows, base["mean"], Path(args.plot))


def write_results(rows: list[dict], base_mean: float, args, n_captions: int, eval_seeds: list[int]) -> None:
    date = datetime.date.today().isoformat()
    lines = [
        f"\n## Toy-world alignment quality ({date}, {platform.processor() or platform.machine()}, "
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
    path = Path(args.results)
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
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
    ax.set_ylabel("judge mean (held-out captions)")
    ax.set_title("Toy world: alignment quality per objective (mean ± seed std)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
