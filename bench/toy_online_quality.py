"""Online alignment in the toy world (issue 24 item 7): GRPO and online Diffusion-DPO, rewarded by the toy scorer,
against offline Diffusion-DPO, judged by the toy judge (which is not the reward) on held-out captions.

    python bench/toy_online_quality.py [--methods dpo,online_dpo,grpo,grpo_sd3] [--seeds 0,1,2] [--jobs 2]
                                       [--eval-seeds 0] [--sd3 /path/to/toy_sd3]

For every (method, training seed): the real recipe (``recipes/diffusion.py``, subprocess, one thread) on its
shipped toy config — ``toy_dpo.yaml`` (offline: the shipped judge-labelled pairs), ``toy_online_dpo.yaml``,
``toy_grpo.yaml``, and ``toy_grpo.yaml`` on the toy SD3 pipeline (``mmalign.toy.flow_pipeline``, flow_grpo's SDE)
for ``grpo_sd3`` — with ``train.seed`` set and the budget below; then the toy evaluation's judge scoring
(:func:`mmalign.toy.evaluate.evaluate_pipeline`, what ``mmalign/toy/diffusion_eval.py`` runs) of base and
base + LoRA on the 108 held-out captions x ``--eval-seeds``, base evaluated once per pipeline. Reported per method:
judge gain and win rate over training seeds; the same images scored by the **reward** (toy scorer), so the
reward-hacking check reads directly: the judge must rise where the reward rises; the training reward per epoch
(``summary.json["online_epochs"]``) as a PNG plot; the compute of each run (rollouts, optimizer steps, CPU-minutes
of the training process).

Prints one JSON line per run and a final JSON summary; ``--results`` writes the section ``toy_online_quality`` of
bench/RESULTS.md. Each run's output stays in ``--out`` (an interrupted bench resumes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = REPO / "recipes" / "configs" / "diffusion"
SD3_TARGETS = "[attn.to_q,attn.to_k,attn.to_v,attn.to_out.0,attn.add_q_proj,attn.add_k_proj,attn.add_v_proj,attn.to_add_out]"
LABEL = ["--per-prompt", "4", "--pairs", "all", "--scorer", "toy", "--normalize", "none", "--steps", "10",
         "--guidance-scale", "3.0", "--prompts-per-batch", "8", "--device", "cpu"]
"""``dpo_reward``'s data: ``mmalign label`` on the 72 train captions x 4 base samples, every pair (432, the shipped
set's size) ordered by the reward (toy scorer) instead of the judge; its CPU time is part of the run's budget."""
RUNS = {
    # name: (config, overrides, labelled by the reward first). Every run at about offline toy_dpo.yaml's CPU time;
    # the online budgets are the shipped toy configs' own (toy_grpo.yaml: 50 steps / 320 rollouts,
    # toy_online_dpo.yaml: 56 steps / 448 rollouts).
    "dpo": ("toy_dpo.yaml", [], False),  # the shipped 432 judge-labelled pairs: the judge trained it
    "dpo_reward": ("toy_dpo.yaml", ["train.max_steps=72"], True),  # labelling ~1.45 CPU-min = 48 DPO steps
    "online_dpo": ("toy_online_dpo.yaml", [], False),
    "grpo": ("toy_grpo.yaml", [], False),
    "dpo_sd3": ("toy_dpo.yaml", ["method.beta=1250", f"lora.target_modules={SD3_TARGETS}"], False),
    "grpo_sd3": ("toy_grpo.yaml", ["method.grpo.sde=flow_grpo", "method.grpo.noise_level=0.7",
                                   f"lora.target_modules={SD3_TARGETS}"], False),
}


def pipeline_of(method: str, args) -> str:
    return args.sd3 if method.endswith("_sd3") else str(REPO / "assets" / "toy" / "pipeline")


def _run(cmd: list[str], log_path: Path) -> float:
    """Run one subprocess (one thread); its CPU minutes (user + system)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: see {log_path}")
    return (usage.ru_utime + usage.ru_stime) / 60


def train(method: str, seed: int, args) -> dict:
    out = Path(args.out) / f"{method}_seed{seed}"
    done = out / "run.json"
    if done.is_file():
        return json.loads(done.read_text())
    config, overrides, labelled = RUNS[method]
    out.mkdir(parents=True, exist_ok=True)
    t0, cpu_min = time.time(), 0.0
    if labelled:  # offline pairs of base samples ordered by the reward (seeded by the training seed)
        labels = out / "labels"
        if not (labels / "pairs.parquet").is_file():
            cpu_min += _run([sys.executable, "-m", "mmalign", "label", "--pipeline", pipeline_of(method, args),
                             "--prompts", str(REPO / "assets" / "toy" / "captions" / "train.txt"), *LABEL,
                             "--seed", str(1000 * seed), "--out", str(labels)], out / "label_log.txt")
        overrides = [*overrides, f"data.path={labels / 'pairs.parquet'}", f"data.cache_dir={out / 'cache'}"]
    else:
        overrides = [f"data.cache_dir={Path(args.out) / ('cache_sd3' if method.endswith('_sd3') else 'cache')}",
                     *overrides]
    cmd = [sys.executable, str(REPO / "recipes" / "diffusion.py"), "--config", str(CONFIGS / config), *overrides,
           f"model.pretrained={pipeline_of(method, args)}", f"train.seed={seed}", f"output_dir={out}",
           "eval.enabled=false", "train.progress_bar=false", "train.checkpoint_every=0"]
    cpu_min += _run(cmd, out / "log.txt")
    return _record(method, seed, out, time.time() - t0, cpu_min)


def _record(method: str, seed: int, out: Path, wall_s: float | None, cpu_min: float | None) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    epochs = summary.get("online_epochs", [])
    record = {"method": method, "seed": seed, "wall_s": None if wall_s is None else round(wall_s, 1),
              "cpu_min": None if cpu_min is None else round(cpu_min, 2), "steps": summary["steps"],
              "train_seconds": round(summary["train_seconds"], 1), "epochs": len(epochs),
              "reward_per_epoch": [e["reward/mean"] for e in epochs],
              "zero_std_per_epoch": [e["zero_std_fraction"] for e in epochs],
              "rollout_seconds": round(sum(e["rollout_seconds"] for e in epochs), 1)}
    if epochs:
        import yaml

        options = yaml.safe_load((out / "mmalign_config.yaml").read_text())["method"][summary["method"]]
        record["rollout_images"] = len(epochs) * options["group_size"] * options["prompts_per_epoch"]
    elif RUNS[method][2]:
        record["rollout_images"] = 72 * 4  # the labelled base samples
    (out / "run.json").write_text(json.dumps(record))
    return record


def _pipeline(path: str, lora: Path | None = None):
    """The toy pipeline (SD3 without T5) with ``lora`` loaded, one thread, no progress bar."""
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    kwargs = {"text_encoder_3": None, "tokenizer_3": None} if "sd3" in str(path) else {}
    pipe = DiffusionPipeline.from_pretrained(str(path), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    return pipe


def _reward_scores(images: np.ndarray, texts: list[str]):
    """The reward (toy scorer) of uint8 (N, H, W, 3) images: float32 tensor [N]."""
    import torch

    import scorers

    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return scorers.load_scorer("toy").score(pixels, texts)


def evaluate(pipeline: str, lora: Path | None, args, cache: Path) -> dict:
    if cache.is_file():
        return json.loads(cache.read_text())
    from mmalign.toy.captions import heldout_captions
    from mmalign.toy.evaluate import evaluate_pipeline

    captions = heldout_captions()[:: args.eval_stride]
    result = evaluate_pipeline(_pipeline(pipeline, lora), captions, args.eval_seeds, num_inference_steps=10,
                               return_images=True, desc=None)
    texts = [c for c in captions for _ in args.eval_seeds]
    result["reward_scores"] = _reward_scores(result.pop("images"), texts).tolist()
    kept = {k: result[k] for k in ("mean", "scores", "captions", "seeds", "reward_scores")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(kept))
    return kept


def judge(method: str, seed: int, args) -> dict:
    from mmalign.toy.evaluate import compare

    pipeline = pipeline_of(method, args)
    name = f"{Path(pipeline).parent.name}_{Path(pipeline).name}"  # toy_pipeline, toy_sd3_pipeline
    base = evaluate(pipeline, None, args, Path(args.out) / "eval" / f"base_{name}.json")
    out = Path(args.out) / f"{method}_seed{seed}"
    aligned = evaluate(pipeline, out, args, out / "eval.json")
    row = compare(base, aligned)
    row["reward_gain"] = float(np.mean(aligned["reward_scores"]) - np.mean(base["reward_scores"]))
    return row


def hacking_grid(method: str, seed: int, args, path: Path, captions: int = 24) -> dict:
    """Where the reward and the judge part: base vs ``method`` seed ``seed`` on the first ``captions`` held-out
    captions (eval seed 0): the judge's terms (color, shape, position, size), the judge and the reward, and a
    side-by-side PNG (left base, right aligned)."""
    from mmalign.toy.captions import heldout_captions
    from mmalign.toy.evaluate import evaluate_pipeline, save_side_by_side_grid

    texts, pipeline = heldout_captions()[:captions], pipeline_of(method, args)
    report, images = {}, {}
    for name, lora in (("base", None), (method, Path(args.out) / f"{method}_seed{seed}")):
        result = evaluate_pipeline(_pipeline(pipeline, lora), texts, [0], num_inference_steps=10, return_images=True,
                                   desc=None)
        images[name] = result["images"]
        report[name] = {"judge": result["mean"], **result["terms"],
                        "reward": float(_reward_scores(result["images"], texts).mean())}
    save_side_by_side_grid(images["base"], images[method], path, captions=texts, columns=4, max_items=captions)
    return report


def reward_judge_agreement() -> dict:
    """How well the reward (toy scorer) ranks like the judge on base samples of the toy UNet pipeline: 24 train
    captions (every third) x 6 seeds (200-205); among same-caption pairs, the fraction ordered alike, and the judge
    gap between the reward's best and worst image of each caption against the judge's own best - worst."""
    from mmalign.toy.captions import train_captions
    from mmalign.toy.evaluate import evaluate_pipeline

    texts, seeds = train_captions()[::3], list(range(200, 206))
    result = evaluate_pipeline(_pipeline(REPO / "assets" / "toy" / "pipeline"), texts, seeds, num_inference_steps=10,
                               return_images=True, desc=None)
    reward = _reward_scores(result["images"], [t for t in texts for _ in seeds]).numpy().reshape(len(texts), -1)
    judge = np.array(result["scores"]).reshape(len(texts), -1)
    same = [(r[a] > r[b]) == (j[a] > j[b]) for r, j in zip(reward, judge) for a in range(len(seeds))
            for b in range(a + 1, len(seeds)) if r[a] != r[b] and j[a] != j[b]]
    return {"pairs": len(same), "agreement": float(np.mean(same)),
            "judge_gap_best_vs_worst_by_reward": float(np.mean(judge[np.arange(len(texts)), reward.argmax(1)]
                                                               - judge[np.arange(len(texts)), reward.argmin(1)])),
            "judge_gap_oracle": float(np.mean(judge.max(1) - judge.min(1)))}


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in records if r["reward_per_epoch"]):
        curves = [r["reward_per_epoch"] for r in records if r["method"] == method]
        n = min(len(c) for c in curves)
        arr = np.array([c[:n] for c in curves])
        ax.plot(range(n), arr.mean(0), marker="o", label=f"{method} (mean of {len(curves)} seeds)")
        ax.fill_between(range(n), arr.min(0), arr.max(0), alpha=0.2)
    ax.set_xlabel("epoch (rollout phase)")
    ax.set_ylabel("training reward (toy scorer, mean over rollouts)")
    ax.set_title("Online alignment in the toy world: reward per epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dpo,online_dpo,grpo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-seeds", default="0")
    parser.add_argument("--eval-stride", type=int, default=1, help="every n-th of the 108 held-out captions")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sd3", default="outputs/toy_sd3/pipeline", help="toy SD3 pipeline (build_toy_sd3)")
    parser.add_argument("--out", default="outputs/bench_toy_online")
    parser.add_argument("--plot", default=str(REPO / "bench" / "toy_online_reward.png"))
    parser.add_argument("--results", action="store_true", help="write the section into bench/RESULTS.md")
    parser.add_argument("--only-done", action="store_true", help="report the finished runs only (train none)")
    parser.add_argument("--grid", default=None, metavar="METHOD:SEED",
                        help="also write the judge's terms and a base | aligned PNG of one run (bench/toy_online_<METHOD>.png)")
    parser.add_argument("--agreement", action="store_true",
                        help="only print how well the reward ranks like the judge on base samples")
    args = parser.parse_args(argv)
    if args.agreement:
        result = reward_judge_agreement()
        print(json.dumps(result))
        return result
    args.eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    jobs = [(m, s) for s in seeds for m in methods]  # seed-major: every method has a seed early
    from diffusers import DiffusionPipeline  # noqa: F401  (once here: diffusers' lazy imports race in threads)

    def run(job: tuple[str, int]) -> dict | None:
        out = Path(args.out) / f"{job[0]}_seed{job[1]}"
        if args.only_done and not (out / "pytorch_lora_weights.safetensors").is_file():
            return None
        record = train(*job, args)
        record.update(judge(record["method"], record["seed"], args))
        print(json.dumps(record), flush=True)
        return record

    with ThreadPoolExecutor(args.jobs) as pool:
        records = [r for r in pool.map(run, jobs) if r is not None]
    summary = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        if not rows:
            continue
        gains = np.array([r["mean_gain"] for r in rows])
        summary[method] = {
            "judge_gain_mean": float(gains.mean()), "judge_gain_std": float(gains.std(ddof=1)) if len(rows) > 1 else 0.0,
            "win_rate_mean": float(np.mean([r["win_rate"] for r in rows])),
            "reward_gain_mean": float(np.mean([r["reward_gain"] for r in rows])),
            "judge_rises_with_reward": all((r["mean_gain"] > 0) or (r["reward_gain"] <= 0) for r in rows),
            "cpu_min_mean": float(np.mean([r["cpu_min"] for r in rows if r["cpu_min"] is not None] or [np.nan])),
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rows])), "steps": rows[0]["steps"],
            "rollout_images": rows[0].get("rollout_images", 0), "seeds": len(rows)}
    plot(records, Path(args.plot))
    grid = None
    if args.grid:
        method, seed = args.grid.split(":")
        png = REPO / "bench" / f"toy_online_{method}.png"
        grid = {"run": args.grid, "png": str(png.relative_to(REPO)), "models": hacking_grid(method, int(seed), args, png)}
    result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "date": datetime.date.today().isoformat(),
              "eval": {"caption_stride": args.eval_stride, "seeds": args.eval_seeds}, "methods": summary,
              "grid": grid}
    print(json.dumps(result, indent=1))
    if args.results:
        from bench.results_section import replace_section

        lines = ["| method | steps | rollouts | CPU-min (train s) | judge gain (mean +- std, seeds) | win rate | reward gain "
                 "| judge rises with reward |", "|---|---|---|---|---|---|---|---|"]
        for m, s in summary.items():
            lines.append(f"| {m} | {s['steps']} | {s['rollout_images']} | {s['cpu_min_mean']:.1f} ({s['train_seconds_mean']:.0f}) | "
                         f"{s['judge_gain_mean']:+.4f} +- {s['judge_gain_std']:.4f} ({s['seeds']}) | "
                         f"{s['win_rate_mean']:.1%} | {s['reward_gain_mean']:+.2f} | {s['judge_rises_with_reward']} |")
        lines += ["", "| run | judge gain +- paired SE | win rate (W/T/L) | reward gain (held-out) | training reward per "
                  "epoch | zero-std fraction per epoch |", "|---|---|---|---|---|---|"]
        for r in records:
            lines.append(f"| {r['method']} seed {r['seed']} | {r['mean_gain']:+.4f} +- {r['gain_standard_error']:.4f} | "
                         f"{r['win_rate']:.1%} ({r['wins']}/{r['ties']}/{r['losses']}) | {r['reward_gain']:+.2f} | "
                         f"{', '.join(f'{v:.1f}' for v in r['reward_per_epoch']) or '-'} | "
                         f"{', '.join(f'{v:.2f}' for v in r['zero_std_per_epoch']) or '-'} |")
        if grid:
            terms = list(next(iter(grid["models"].values())))
            lines += ["", f"Where reward and judge part ({grid['run']}, first 24 held-out captions, eval seed 0; "
                      f"{grid['png']}: left base, right aligned):", "",
                      "| model | " + " | ".join(terms) + " |", "|---" * (len(terms) + 1) + "|"]
            lines += [f"| {m} | " + " | ".join(f"{v:.3f}" for v in t.values()) + " |" for m, t in grid["models"].items()]
        body = (f"Machine: {result['machine']}, {result['date']}; `python bench/toy_online_quality.py "
                f"--methods {args.methods} --seeds {args.seeds} --eval-stride {args.eval_stride}`; judge on "
                f"{len(range(0, 108, args.eval_stride))} held-out captions x "
                f"seeds {args.eval_seeds}; reward plot: bench/toy_online_reward.png.\n\n" + "\n".join(lines))
        replace_section(REPO / "bench" / "RESULTS.md", "toy_online_quality", body,
                        title="Online alignment in the toy world (issue 24)")
    return result


if __name__ == "__main__":
    main()
