"""``mmalign eval-scorer --scorer <name> --checkpoint <path> --data <pairs>``: scorer accuracy on preference data.

Data are read with :func:`mmalign.data.load_preference_data` (Pick-a-Pic parquet, jsonl + images, ...). Prints one
JSON line naming the protocol (spec §8, :mod:`scorers.accuracy`):

* ``--kind pairs`` (default): **Pick-a-Pic pairwise accuracy with ties** — ``p_chosen, p_rejected`` are the softmax
  of the two scores (``logit_scale.exp() * cos`` for scorers with a logit scale, the card's score otherwise); a
  prediction is a tie if ``|p0 - p1| <= --tie-threshold``; credit 1 if prediction and ground truth agree (both
  ties, or the same winner), 0.5 if exactly one is a tie, 0 otherwise. Ground-truth ties (``label_0 = 0.5``) are
  kept and scored so (``n_gt_ties``; ``--drop-ties`` excludes them); ``chance`` is the protocol's chance level.
  ``strict_accuracy`` (chosen scored strictly above rejected, ImageReward-style, over pairs with a winner) too.
* ``--kind ranked``: **HPD v2 ranking accuracy** (macro mean of per-prompt inversion scores) and the
  **ImageReward preference accuracy** (micro, GT ties skipped, predicted ties wrong); ground-truth order from the
  data's scores.
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "eval-scorer"
HELP = "Measure a scorer's preference accuracy on pairs or ranked lists (protocol named in the output)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scorers.options import add_scorer_arguments

    add_scorer_arguments(parser)
    parser.add_argument("--data", required=True, help="preference data path (parquet / folder / jsonl / hub id)")
    parser.add_argument("--kind", default="pairs", choices=["pairs", "ranked"], help="how to read --data")
    parser.add_argument("--split", default=None, help="split of a multi-split dataset (default train)")
    parser.add_argument("--tie-threshold", type=float, default=0.0, help="Pick-a-Pic tie threshold t on |p0 - p1|")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--drop-ties", action="store_true",
                        help="pairs: exclude ground-truth ties (label_0 = 0.5) instead of scoring them")


def _items(dataset, limit: int | None, skipped: list, unit: str):
    """Readable items; unreadable ones (corrupt / missing / too-small images) are appended to ``skipped``."""
    from tqdm.auto import tqdm

    from mmalign.data import BadSample

    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in tqdm(range(n), desc="eval-scorer", unit=unit):
        item = dataset[i]
        if isinstance(item, BadSample):
            skipped.append(item)
            continue
        yield item


def _logits(scorer, images, prompts, batch_size: int):
    """Scores on the logit scale of the scorer's preference objective (for the pairwise softmax)."""
    if scorer.card.probs:
        return scorer.logit_scale * scorer.score(images, prompts, raw=True, batch_size=batch_size)
    return scorer.score(images, prompts if scorer.needs_text else None, batch_size=batch_size)


def _eval_pairs(scorer, dataset, args, skipped: list) -> dict:
    import torch

    from scorers.accuracy import pairwise_probs, pickapic_accuracy, pickapic_chance

    if args.tie_threshold > 0 and not scorer.card.probs:
        raise ValueError(f"--tie-threshold > 0 needs preference probabilities; {scorer.name} has none")
    chosen_scores, rejected_scores, labels, batch = [], [], [], []

    def flush():
        if not batch:
            return
        images = [b["chosen"] for b in batch] + [b["rejected"] for b in batch]
        prompts = [b.get("prompt_chosen", b["prompt"]) for b in batch] + [
            b.get("prompt_rejected", b["prompt"]) for b in batch]
        s = _logits(scorer, images, prompts, args.batch_size)
        chosen_scores.append(s[: len(batch)])
        rejected_scores.append(s[len(batch):])
        labels.extend(float(b.get("label_0", 1.0)) for b in batch)
        batch.clear()

    for item in _items(dataset, args.limit, skipped, "pair"):
        batch.append(item)
        if len(batch) * 2 >= args.batch_size:
            flush()
    flush()
    if not chosen_scores:
        raise ValueError(f"{args.data}: no readable pairs")
    sc, sr = torch.cat(chosen_scores), torch.cat(rejected_scores)
    p0, p1 = pairwise_probs(sc, sr)
    label = torch.tensor(labels, dtype=torch.float64)
    acc = pickapic_accuracy(p0, p1, label, threshold=args.tie_threshold)
    n_ties = int((label == 0.5).sum())
    won = label != 0.5
    strict = float((sc[won] > sr[won]).double().mean()) if won.any() else None
    return {"protocol": "pickapic_pairwise_with_ties", "tie_threshold": args.tie_threshold, "accuracy": acc,
            "chance": pickapic_chance(args.tie_threshold, n_ties, len(sc)), "strict_accuracy": strict,
            "n_pairs": len(sc), "n_gt_ties": n_ties, "gt_ties_dropped": dataset.stats.dropped_tie}


def _eval_ranked(scorer, dataset, args, skipped: list) -> dict:
    from scorers.accuracy import hpdv2_ranking_accuracy, imagereward_accuracy

    predicted, gt_ranks = [], []
    for item in _items(dataset, args.limit, skipped, "list"):
        images, gt = item["images"], item["scores"]
        s = scorer.score(images, item["prompt"] if scorer.needs_text else None, batch_size=args.batch_size)
        predicted.append(s.tolist())
        gt_ranks.append([sum(other > g for other in gt) + 1 for g in gt])  # 1 = best, ties share a rank
    if not predicted:
        raise ValueError(f"{args.data}: no readable ranked lists")
    out = {"protocol": "hpdv2_ranking_accuracy", "accuracy": hpdv2_ranking_accuracy(predicted, gt_ranks),
           "n_lists": len(predicted)}
    try:
        out["imagereward_accuracy"] = imagereward_accuracy(predicted, gt_ranks)
    except ValueError:  # every list fully tied in the ground truth
        out["imagereward_accuracy"] = None
    return out


def run(args: argparse.Namespace) -> int:
    from mmalign.data import load_preference_data
    from scorers.options import load_scorers_from_args

    (name, scorer), = load_scorers_from_args(args).items()
    dataset = load_preference_data(args.data, args.kind, split=args.split, bad_image="drop",
                                   keep_ties=args.kind == "pairs" and not args.drop_ties)
    skipped: list = []
    evaluate = _eval_pairs if args.kind == "pairs" else _eval_ranked
    result = evaluate(scorer, dataset, args, skipped)
    print(json.dumps({"scorer": name, "data": str(args.data), **result, "skipped_bad_items": len(skipped)}))
    print(_closing(name, result, skipped), file=sys.stderr)
    return 0


def _closing(name: str, result: dict, skipped: list) -> str:
    """The one line after the JSON: what was measured, which ties were scored or dropped, what was skipped."""
    if "n_pairs" in result:
        text = f"mmalign eval-scorer: {name} accuracy {result['accuracy']:.4f} on {result['n_pairs']} pairs"
        text += f" ({result['n_gt_ties']} ground-truth ties scored as Pick-a-Pic does"
        text += f"; {result['gt_ties_dropped']} dropped by --drop-ties)" if result["gt_ties_dropped"] else ")"
    else:
        text = f"mmalign eval-scorer: {name} accuracy {result['accuracy']:.4f} on {result['n_lists']} ranked lists"
    if skipped:
        text += f"; skipped {len(skipped)} unreadable items (first: {skipped[0].describe()})"
    return text
