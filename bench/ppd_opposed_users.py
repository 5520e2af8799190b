"""PPD with two *opposed* toy users: can the user branch learn what one unconditioned model cannot? (issue #6)

    python bench/ppd_opposed_users.py [--seeds 0,1,2] [--max-captions 54] [--eval-seeds 2] [--steps 10]

The shipped per-user toy data (``per_user.parquet``) has four users who weight the judge's terms differently, but
every one of them prefers the same ideal image (the one that matches its caption in every term), so a better model
is better for all of them and personalisation has little to win. This bench builds the opposite extreme from the
shipped judge-labelled pairs (``pairs.parquet``, ties removed): user 0 keeps the judge's labels, user 1 gets each
label flipped (a user who prefers the worse match). Then, per training seed, with the same recipe and budget as
``toy_ppd.yaml`` / ``toy_dpo.yaml``:

* **PPD**: ``toy_ppd.yaml`` on the two users (4-shot ``clip_margin`` embeddings, user K/V trained, base frozen);
* **pooled DPO**: ``toy_dpo.yaml`` (LoRA Diffusion-DPO) on the same rows without the user ids;

and samples the first ``--max-captions`` held-out captions x ``--eval-seeds`` seeds (one noise per (caption, seed),
as every toy evaluation) from the base, pooled DPO, PPD with user 0's and with user 1's embedding. User 0's score of
an image is the judge's; user 1's is minus the judge's. Reported per user: PPD (own embedding) vs pooled DPO, PPD
vs base and own vs the other user's embedding (win rates on matched images, ties half), plus judge means.
Prints one JSON line per seed, writes its section of ``bench/RESULTS.md``. Not run by CI (~4 CPU-minutes a seed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results_section import replace_section  # noqa: E402
from mmalign.toy import paths  # noqa: E402
from mmalign.toy.evaluate import image_seed, score_images  # noqa: E402
from mmalign.toy.ppd_eval import sample, win_rate  # noqa: E402

CONFIGS = REPO / "recipes" / "configs" / "diffusion"


def opposed_users(pairs: pd.DataFrame) -> pd.DataFrame:
    """User 0: the judge's labels; user 1: every label flipped. Ties (label 0.5) are dropped."""
    decided = pairs[pairs["label_0"] != 0.5].reset_index(drop=True)
    flipped = decided.copy()
    flipped["label_0"], flipped["label_1"] = decided["label_1"], decided["label_0"]
    return pd.concat([decided.assign(user_id=0), flipped.assign(user_id=1)], ignore_index=True)


def run_recipe(config: str, overrides: list[str], log: Path) -> None:
    cmd = [sys.executable, str(REPO / "recipes" / "diffusion.py"), "--config", str(CONFIGS / config), *overrides,
           "train.progress_bar=false"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


def train(data: Path, seed: int, out: Path) -> tuple[Path, Path]:
    """PPD and pooled-DPO runs for one training seed (reused when their exports exist)."""
    ppd, dpo = out / f"ppd_seed{seed}", out / f"dpo_seed{seed}"
    if not (ppd / "user_adapter").is_dir():
        run_recipe("toy_ppd.yaml", [f"data.path={data}", f"train.seed={seed}", f"output_dir={ppd}",
                                    f"data.cache_dir={out / 'cache'}", f"method.ppd.cache_dir={ppd / 'embeddings'}"],
                   out / f"ppd_seed{seed}.log")
    if not (dpo / "pytorch_lora_weights.safetensors").is_file():
        run_recipe("toy_dpo.yaml", [f"data.path={data}", f"train.seed={seed}", f"output_dir={dpo}",
                                    f"data.cache_dir={out / 'cache_dpo'}", "eval.enabled=false"],
                   out / f"dpo_seed{seed}.log")
    return ppd, dpo


def judge_scores(images: np.ndarray, captions: list[str]) -> torch.Tensor:
    return torch.tensor(score_images(images, captions)["scores"], dtype=torch.float64)


def eval_images(captions: list[str], eval_seeds: int) -> tuple[list[str], list[int]]:
    """Caption and generator seed of every evaluation image: one noise per (caption, seed)."""
    caps = [c for c in captions for _ in range(eval_seeds)]
    return caps, [image_seed(s, i) for i in range(len(captions)) for s in range(eval_seeds)]


def evaluate_base(captions: list[str], eval_seeds: int, steps: int) -> torch.Tensor:
    """Judge scores of the base pipeline's evaluation images (the same for every training seed: computed once)."""
    from mmalign.toy.build import load_pipeline

    caps, seeds = eval_images(captions, eval_seeds)
    return judge_scores(sample(load_pipeline(paths.pipeline_dir()), caps, seeds, steps=steps), caps)


def evaluate(ppd: Path, dpo: Path, base_scores: torch.Tensor, captions: list[str], eval_seeds: int,
             steps: int) -> dict:
    from mmalign.diffusion.ppd.export import load_user_adapter, load_user_embeddings
    from mmalign.toy.build import load_pipeline

    caps, seeds = eval_images(captions, eval_seeds)
    judged = {"base": base_scores}
    dpo_pipe = load_pipeline(paths.pipeline_dir())
    dpo_pipe.load_lora_weights(str(dpo))
    judged["dpo"] = judge_scores(sample(dpo_pipe, caps, seeds, steps=steps), caps)
    ppd_pipe = load_pipeline(paths.pipeline_dir())
    model = load_user_adapter(ppd_pipe.unet, ppd / "user_adapter")
    for user, emb in load_user_embeddings(ppd / "user_adapter").items():
        judged[f"ppd_user{user}"] = judge_scores(sample(ppd_pipe, caps, seeds, model=model, user_embeds=emb,
                                                        steps=steps), caps)
    per_user = {}
    for user, sign in (("0", 1.0), ("1", -1.0)):  # user 1 scores an image by minus the judge
        own, other = sign * judged[f"ppd_user{user}"], sign * judged[f"ppd_user{1 - int(user)}"]
        base, pooled = sign * judged["base"], sign * judged["dpo"]
        per_user[user] = {"ppd_win_vs_dpo": win_rate(own, pooled), "ppd_win_vs_base": win_rate(own, base),
                          "dpo_win_vs_base": win_rate(pooled, base), "ppd_own_vs_other_win": win_rate(own, other)}
    means = {k: float(v.mean()) for k, v in judged.items()}
    return {"per_user": per_user, "judge_mean": means, "images": len(caps)}


def write_results(results: list[dict], args) -> None:
    date = datetime.date.today().isoformat()
    lines = [
        f"## PPD with two opposed toy users ({date}, CPU, `bench/ppd_opposed_users.py`)\n",
        "Data: the shipped judge-labelled `pairs.parquet` without ties (225 pairs); user 0 = the judge's labels, "
        "user 1 = every label flipped. PPD = `toy_ppd.yaml` (4-shot `clip_margin` embeddings, user K/V only), "
        "pooled DPO = `toy_dpo.yaml` (LoRA) on the same rows without user ids; 120 x 16 pairs each. Evaluation: "
        f"first {args.max_captions} held-out captions x {args.eval_seeds} seeds, {args.steps} DDIM steps; user 0 "
        "scores by the judge, user 1 by minus the judge; win rates on matched images (ties half).\n",
        "| training seed | user | PPD vs pooled DPO | PPD vs base | pooled DPO vs base | own vs other user's embedding |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for user, row in r["per_user"].items():
            lines.append(f"| {r['seed']} | {user} | {row['ppd_win_vs_dpo']:.3f} | {row['ppd_win_vs_base']:.3f} | "
                         f"{row['dpo_win_vs_base']:.3f} | {row['ppd_own_vs_other_win']:.3f} |")
    keys = ("ppd_win_vs_dpo", "ppd_win_vs_base", "dpo_win_vs_base", "ppd_own_vs_other_win")
    mean = {k: np.mean([row[k] for r in results for row in r["per_user"].values()]) for k in keys}
    lines.append("| **mean** | both | **{:.3f}** | {:.3f} | {:.3f} | {:.3f} |".format(*(mean[k] for k in keys)))
    lines.append("\nJudge means (base / pooled DPO / PPD user 0 / PPD user 1): " + "; ".join(
        f"seed {r['seed']}: " + " / ".join(f"{r['judge_mean'][k]:.4f}" for k in ("base", "dpo", "ppd_user0",
                                                                                "ppd_user1")) for r in results))
    replace_section(Path(args.results), "ppd_opposed_users", "\n".join(lines),
                    title="(bench/ppd_opposed_users.py, issue #6)")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--max-captions", type=int, default=54)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps at evaluation")
    parser.add_argument("--out", default=str(REPO / "outputs" / "ppd_opposed_users"))
    parser.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "opposed_users.parquet"
    opposed_users(pd.read_parquet(paths.data_dir() / "pairs.parquet")).to_parquet(data)
    captions = paths.read_captions(paths.assets_dir() / paths.HELDOUT_CAPTIONS)[: args.max_captions]
    base_scores = evaluate_base(captions, args.eval_seeds, args.steps)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ppd, dpo = train(data, seed, out)
        result = {"seed": seed, **evaluate(ppd, dpo, base_scores, captions, args.eval_seeds, args.steps)}
        print(json.dumps(result), flush=True)
        results.append(result)
    write_results(results, args)


if __name__ == "__main__":
    main()
