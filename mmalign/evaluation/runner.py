"""The evaluation run behind ``mmalign evaluate``: generate (resumably, split across processes), score, compare,
report.

Steps (each process of an ``accelerate launch`` / ``torchrun`` job runs them on its share ``k % world == rank`` of
the images; a single process does everything):

1. ``<out>/eval_config.json`` records what defines the images (models, prompts, seeds, sampler); a later run into
   the same folder must match it (else a ValueError before any model loads), and then reuses every saved image;
2. base, then aligned: the images ``<out>/images/{base,aligned}/<k>.png`` that are missing are generated
   (:func:`mmalign.evaluation.generation.generate_into`); a model whose images all exist is not even loaded; a LoRA
   is loaded onto the base pipeline already in memory;
3. every scorer, loaded one at a time after generation, scores both models' images; per-process parts
   ``<out>/parts/scores.rank<r>.json`` are merged by the main process;
4. the main process computes :func:`mmalign.evaluation.stats.compare_scores` per scorer, overall and per category,
   and writes ``eval.json``, ``scores.jsonl`` (one row per image) and the report (:mod:`mmalign.evaluation.report`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmalign.evaluation.generation import ImageStore, Plan, generate_into
from mmalign.evaluation.models import ModelPlan, apply_lora, load_pipeline, release_memory
from mmalign.evaluation.prompts import PromptSet
from mmalign.evaluation.stats import DEFAULT_BOOTSTRAP, compare_scores

CONFIG_FILE = "eval_config.json"
EVAL_FILE = "eval.json"
SCORES_FILE = "scores.jsonl"
MODELS = ("base", "aligned")


@dataclass
class Sampler:
    """The sampler settings that define the images (recorded in ``eval_config.json``)."""

    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    pipeline_dtype: str = "float32"


@dataclass
class EvalSettings:
    out: str
    scorer_names: list[str]
    scorer_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    sampler: Sampler = field(default_factory=Sampler)
    images_per_batch: int = 8
    score_batch_size: int = 32
    device: str = "cpu"
    tie_margin: float = 0.0
    n_boot: int = DEFAULT_BOOTSTRAP
    bootstrap_seed: int = 0
    grid_size: int = 24
    progress: bool = True


def prompts_digest(prompts: PromptSet) -> str:
    text = json.dumps([prompts.prompts, prompts.categories], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def identity(models: ModelPlan, prompts: PromptSet, settings: EvalSettings) -> dict[str, Any]:
    """What the saved images depend on."""
    return {**models.describe(), "prompts": prompts.source, "num_prompts": len(prompts),
            "prompts_sha256": prompts_digest(prompts), "seeds": list(settings.seeds), **asdict(settings.sampler)}


def check_resume(out: Path, ident: dict[str, Any]) -> bool:
    """True when ``out`` holds an earlier run of the same evaluation; ValueError naming the first differing key
    when it holds another one."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    for key in sorted(set(old) | set(ident)):
        if old.get(key) != ident.get(key):
            raise ValueError(f"--out {out} holds another evaluation ({CONFIG_FILE}: {key} was {old.get(key)!r}, now "
                             f"{ident.get(key)!r}); use a new --out folder or delete it")
    return True


class _Pipelines:
    """Loads the base pipeline, then the aligned model (a LoRA onto the same pipeline, or its own pipeline)."""

    def __init__(self, models: ModelPlan, settings: EvalSettings):
        self.models, self.settings, self.pipe, self.holds = models, settings, None, None

    def _load(self, source: str, revision: str | None = None):
        self.pipe = None
        release_memory()
        return load_pipeline(source, dtype=self.settings.sampler.pipeline_dtype, device=self.settings.device,
                             revision=revision)

    def get(self, which: str):
        if self.holds == which:
            return self.pipe
        m = self.models
        if which == "base":
            self.pipe = self._load(m.base, m.base_revision)
        elif m.kind == "lora":
            if self.holds != "base":
                self.pipe = self._load(m.base, m.base_revision)
            self.pipe = apply_lora(self.pipe, m)
        else:
            self.pipe = self._load(m.aligned)
        self.holds = which
        return self.pipe

    def close(self) -> None:
        self.pipe = self.holds = None
        release_memory()


def generate_all(models: ModelPlan, plan: Plan, out: Path, settings: EvalSettings, rank: int = 0,
                 world: int = 1) -> dict[str, int]:
    """Step 2: the missing images of this process's share; returns how many each model generated."""
    mine = [k for k in range(len(plan)) if k % world == rank]
    sampler = settings.sampler
    pipes = _Pipelines(models, settings)
    made = {}
    for which in MODELS:
        made[which] = generate_into(
            ImageStore(out / "images" / which), lambda w=which: pipes.get(w), plan, mine,
            batch_size=settings.images_per_batch, desc=f"generate ({which})" if settings.progress else None,
            num_inference_steps=sampler.num_inference_steps, guidance_scale=sampler.guidance_scale,
            height=sampler.height, width=sampler.width)
    pipes.close()
    return made


def score_all(plan: Plan, out: Path, settings: EvalSettings, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Step 3 for this process's share: ``{scorer: {model: {k: score}}}``, also written to its part file."""
    from tqdm.auto import tqdm

    from mmalign.evaluation.scoring import load_eval_scorer, score_images

    mine = [k for k in range(len(plan)) if k % world == rank]
    prompts = [plan.prompt(k) for k in mine]
    result: dict[str, Any] = {}
    for name in settings.scorer_names:
        scorer = load_eval_scorer(name, **{"device": settings.device, **settings.scorer_kwargs.get(name, {})})
        result[name] = {}
        for which in MODELS:
            store, scores = ImageStore(out / "images" / which), []
            step = max(1, settings.score_batch_size)
            for start in tqdm(range(0, len(mine), step), desc=f"score {name} ({which})", unit="batch",
                              disable=not settings.progress):
                chunk = mine[start:start + step]
                scores.extend(score_images(scorer, store.load(chunk), prompts[start:start + step],
                                           batch_size=settings.score_batch_size).tolist())
            result[name][which] = dict(zip(mine, scores))
        del scorer
        release_memory()
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    (parts / f"scores.rank{rank}.json").write_text(json.dumps(result))
    return result


def merge_parts(out: Path, plan: Plan, names: list[str], world: int) -> dict[str, dict[str, np.ndarray]]:
    """``{scorer: {model: scores [N] in image order}}`` from the processes' part files."""
    merged = {n: {w: np.full(len(plan), np.nan) for w in MODELS} for n in names}
    for rank in range(world):
        part = json.loads((out / "parts" / f"scores.rank{rank}.json").read_text())
        for n in names:
            for w in MODELS:
                for k, v in part[n][w].items():
                    merged[n][w][int(k)] = v
    for n in names:
        for w in MODELS:
            if np.isnan(merged[n][w]).any():
                raise RuntimeError(f"scores of {n} ({w}) missing for {int(np.isnan(merged[n][w]).sum())} images")
    return merged


def summarize(scores: dict[str, dict[str, np.ndarray]], plan: Plan, prompts: PromptSet,
              settings: EvalSettings) -> dict[str, Any]:
    """The per-scorer block of ``eval.json``: overall :func:`compare_scores` and ``per_category``."""
    groups = np.asarray(plan.groups())
    cats = None if prompts.categories is None else np.asarray([prompts.categories[g] for g in groups], dtype=object)
    kw = {"tie_margin": settings.tie_margin, "n_boot": settings.n_boot, "seed": settings.bootstrap_seed}
    block = {}
    for name, s in scores.items():
        row = compare_scores(s["base"], s["aligned"], groups, **kw)
        if cats is not None:
            row["per_category"] = {}
            for c in dict.fromkeys(cats):
                m = cats == c
                row["per_category"][c] = compare_scores(s["base"][m], s["aligned"][m], groups[m], **kw)
        block[name] = row
    return block


def write_scores_jsonl(path: Path, scores: dict[str, dict[str, np.ndarray]], plan: Plan, prompts: PromptSet) -> None:
    with path.open("w", encoding="utf-8") as f:
        for k in range(len(plan)):
            g = plan.prompt_index(k)
            row = {"index": k, "prompt": plan.prompt(k), "category": prompts.categories[g] if prompts.categories
                   else None, "seed": plan.seed(k), "generator_seed": plan.generator_seed(k),
                   "images": {w: f"images/{w}/{k:05d}.png" for w in MODELS},
                   "scores": {n: {w: float(s[w][k]) for w in MODELS} for n, s in scores.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_evaluation(models: ModelPlan, prompts: PromptSet, settings: EvalSettings, *, rank: int = 0, world: int = 1,
                   barrier=lambda: None, print_fn=print) -> dict[str, Any] | None:
    """Steps 1-4 (module docstring); returns the ``eval.json`` content on the main process (None elsewhere)."""
    out = Path(settings.out)
    plan = Plan(prompts.prompts, list(settings.seeds))
    ident = identity(models, prompts, settings)
    resumed = check_resume(out, ident)
    barrier()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(ident, indent=2))
    made = generate_all(models, plan, out, settings, rank, world)
    barrier()
    score_all(plan, out, settings, rank, world)
    barrier()
    if rank != 0:
        return None
    scores = merge_parts(out, plan, settings.scorer_names, world)
    result = {
        **ident, "num_images": len(plan), "num_processes": world, "resumed": resumed,
        "generated_here": made, "images": {w: f"images/{w}" for w in MODELS}, "scores_file": SCORES_FILE,
        "categories": sorted(set(prompts.categories)) if prompts.categories else None,
        "scorers": summarize(scores, plan, prompts, settings),
    }
    write_scores_jsonl(out / SCORES_FILE, scores, plan, prompts)
    from mmalign.evaluation.report import write_report

    result["report"] = write_report(out, result, scores, plan, prompts, grid_size=settings.grid_size)
    (out / EVAL_FILE).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print_fn(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"mmalign evaluate: {result['num_prompts']} prompts x {len(result['seeds'])} seeds = "
             f"{result['num_images']} images per model ({result['prompts']})",
             f"  {'scorer':<14}{'base':>22}{'aligned':>22}{'win rate (95% CI)':>28}"]
    for name, row in result["scorers"].items():
        b, a = row["base"], row["aligned"]
        lo, hi = row["win_rate_ci95"]
        lines.append(f"  {name:<14}{b['mean']:>12.4f} ± {(b['ci95'][1] - b['mean']):<7.4f}"
                     f"{a['mean']:>12.4f} ± {(a['ci95'][1] - a['mean']):<7.4f}"
                     f"{100 * row['win_rate']:>11.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
                     f"({row['wins']}W/{row['ties']}T/{row['losses']}L)")
    return "\n".join(lines)
