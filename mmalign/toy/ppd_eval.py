"""Per-user evaluation in the toy world: does conditioning on a user's 4-shot embedding serve that user better than
one model for everybody?

For every toy user ``k`` (``mmalign.toy.prefdata.USERS``: weights of the judge's colour / shape / position / size
terms) and every (caption, seed):

* ``base``  — the toy pipeline (same images for every user);
* ``dpo``   — the pipeline with an unconditioned Diffusion-DPO LoRA trained on all users' pairs pooled;
* ``ppd``   — the pipeline with the PPD user adapter, conditioned on user ``k``'s embedding;
* ``ppd_other`` — the same adapter conditioned on the *other* users' embeddings (a control: personalisation means
  user ``k``'s own embedding scores higher under ``k``'s weights than the others' do).

Each image is scored with user ``k``'s weighted judge ``sum_j w_kj term_j / sum_j w_kj``
(:func:`mmalign.toy.judge.weighted_score`). Win rates compare matched (caption, seed) images, ties (|diff| <= 1e-6)
count half.

    python -m mmalign.toy.ppd_eval --base assets/toy/pipeline --dpo outputs/toy_dpo_users \\
        --ppd outputs/toy_ppd/user_adapter --captions assets/toy/captions/heldout.txt --seeds 4 --out ppd_eval.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmalign.diffusion.ppd.inference import user_cross_attention_kwargs
from mmalign.diffusion.sampling import generate
from mmalign.toy.evaluate import image_seed

TIE = 1e-6


@torch.no_grad()
def sample(pipe, captions: Sequence[str], seeds: Sequence[int], *, model=None, user_embeds: torch.Tensor | None = None,
           steps: int = 20, guidance: float = 3.0, batch_size: int = 32) -> np.ndarray:
    """uint8 ``(N, H, W, 3)``, one generator per image (as :func:`mmalign.toy.sampling.sample_images`), optionally
    conditioned on one user embedding."""
    out = []
    for i in range(0, len(captions), batch_size):
        caps = list(captions[i:i + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        kwargs = None
        if model is not None and user_embeds is not None:
            kwargs = user_cross_attention_kwargs(model, user_embeds, len(caps), guidance > 1)
        images = generate(pipe, caps, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                          output_type="np", cross_attention_kwargs=kwargs)
        out.append(np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def user_scores(images: np.ndarray, captions: Sequence[str], weights: dict[str, float]) -> torch.Tensor:
    from mmalign.toy.judge import judge_terms, weighted_score

    return weighted_score(judge_terms(images, list(captions)), weights).double()


def win_rate(a: torch.Tensor, b: torch.Tensor) -> float:
    """Win rate of ``a`` over ``b`` (|a - b| <= TIE counts half): the win counts of ``mmalign evaluate``."""
    from mmalign.evaluation.stats import win_counts

    return win_counts(b.double().numpy(), a.double().numpy(), TIE)["win_rate"]


def evaluate_users(base_pipe, dpo_pipe, ppd_pipe, ppd_model, embeddings: dict[str, torch.Tensor],
                   users: dict[Any, dict[str, float]], captions: Sequence[str], seeds: Sequence[int],
                   steps: int = 20, guidance: float = 3.0) -> dict[str, Any]:
    """See the module docstring; ``embeddings`` keyed by ``str(user_id)``."""
    caps = [c for c in captions for _ in seeds]
    sds = [image_seed(s, i) for i in range(len(captions)) for s in seeds]  # one noise per (caption, seed)
    kw = dict(steps=steps, guidance=guidance)
    base_images = sample(base_pipe, caps, sds, **kw)
    dpo_images = sample(dpo_pipe, caps, sds, **kw) if dpo_pipe is not None else None
    ppd_images = {u: sample(ppd_pipe, caps, sds, model=ppd_model, user_embeds=e, **kw) for u, e in embeddings.items()}
    per_user = {}
    for user, weights in users.items():
        key = str(user)
        if key not in ppd_images:
            continue
        base = user_scores(base_images, caps, weights)
        ppd = user_scores(ppd_images[key], caps, weights)
        others = [user_scores(ppd_images[o], caps, weights) for o in ppd_images if o != key]
        row = {"base": float(base.mean()), "ppd": float(ppd.mean()), "ppd_win_vs_base": win_rate(ppd, base)}
        if others:
            row["ppd_other_users"] = float(torch.stack(others).mean())
            row["ppd_own_vs_other_win"] = float(np.mean([win_rate(ppd, o) for o in others]))
        if dpo_images is not None:
            dpo = user_scores(dpo_images, caps, weights)
            row.update(dpo=float(dpo.mean()), dpo_win_vs_base=win_rate(dpo, base), ppd_win_vs_dpo=win_rate(ppd, dpo))
        per_user[key] = row
    keys = sorted({k for r in per_user.values() for k in r})
    mean = {k: float(np.mean([r[k] for r in per_user.values() if k in r])) for k in keys}
    return {"per_user": per_user, "mean_over_users": mean, "images_per_user": len(caps), "steps": steps,
            "guidance": guidance}


def main(argv: list[str] | None = None) -> int:
    from mmalign.diffusion.ppd.export import load_user_adapter, load_user_embeddings
    from mmalign.toy.build import load_pipeline
    from mmalign.toy.paths import read_captions
    from mmalign.toy.prefdata import USERS

    parser = argparse.ArgumentParser(description="Per-user win rates of PPD vs unconditioned Diffusion-DPO (toy)")
    parser.add_argument("--base", required=True, help="toy pipeline folder")
    parser.add_argument("--ppd", required=True, help="exported user_adapter folder (with user_embeddings)")
    parser.add_argument("--dpo", default=None, help="output folder of a LoRA Diffusion-DPO run (optional)")
    parser.add_argument("--captions", required=True, help="captions file (one per line)")
    parser.add_argument("--max-captions", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args(argv)

    captions = read_captions(args.captions)[: args.max_captions]
    base = load_pipeline(Path(args.base))
    dpo = None
    if args.dpo:
        dpo = load_pipeline(Path(args.base))
        dpo.load_lora_weights(args.dpo)
    ppd_pipe = load_pipeline(Path(args.base))
    model = load_user_adapter(ppd_pipe.unet, args.ppd)
    embeddings = load_user_embeddings(args.ppd)
    result = evaluate_users(base, dpo, ppd_pipe, model, embeddings, USERS, captions, list(range(args.seeds)),
                            args.steps, args.guidance)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
