"""``mmalign score`` / ``eval-scorer`` / ``label`` through the CLI entry point, with tiny scorers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import scorers
from mmalign.cli import main
from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints
from tests.helpers import REPO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_scorer_checkpoints(tmp_path_factory.mktemp("tiny_scorers"))


def _cli_args(name: str, kwargs: dict) -> list[str]:
    out = ["--scorer", name]
    for key, value in kwargs.items():
        out += ["--scorer-arg", f"{key}={json.dumps(value) if isinstance(value, dict) else value}"]
    return out


def _write_images(folder, n: int, seed: int = 0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(folder / f"{i:03d}.png")
        img.save(paths[-1])
    return paths


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_score_cli(tiny, tmp_path, capsys):
    paths = _write_images(tmp_path / "imgs", 4)
    s = scorers.load_scorer("hpsv2", **tiny["hpsv2"])
    assert main(["score", *_cli_args("hpsv2", tiny["hpsv2"]), "--images", str(tmp_path / "imgs"),
                 "--prompts", "a red circle", "--probs"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    expected = s.score([Image.open(p) for p in paths], "a red circle")
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), expected)
    torch.testing.assert_close(torch.tensor([r["raw"] for r in rows]), expected / 100, atol=1e-6, rtol=0)
    assert sum(r["prob"] for r in rows) == pytest.approx(1.0, abs=1e-5)

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\nc\n")
    assert main(["score", *_cli_args("hpsv2", tiny["hpsv2"]), "--images", *map(str, paths),
                 "--prompts", str(prompts)]) == 2
    assert "3 prompts for 4 images" in capsys.readouterr().err
    assert main(["score", "--scorer", "pickscore", "--checkpoint", str(tmp_path / "missing"),
                 "--images", str(paths[0]), "--prompts", "x"]) == 2
    assert "missing" in capsys.readouterr().err


def test_eval_scorer_cli_pairs_and_ranked(tiny, tmp_path, capsys):
    from mmalign.data import write_pairs_jsonl, write_ranked_jsonl

    s = scorers.load_scorer("pickscore", **tiny["pickscore"])
    paths = _write_images(tmp_path / "imgs", 8, seed=1)
    images = [Image.open(p).convert("RGB") for p in paths]
    prompts = ["a red circle", "a blue square", "a cat", "a dog"]
    rows = [{"prompt": prompts[i], "chosen": images[2 * i], "rejected": images[2 * i + 1]} for i in range(4)]
    write_pairs_jsonl(rows, tmp_path / "pairs" / "pairs.jsonl")
    assert main(["eval-scorer", *_cli_args("pickscore", tiny["pickscore"]),
                 "--data", str(tmp_path / "pairs" / "pairs.jsonl")]) == 0
    (result,) = _json_lines(capsys.readouterr().out)
    chosen = s.score(images[0::2], prompts)
    rejected = s.score(images[1::2], prompts)
    expected = float((chosen > rejected).double().mean())
    assert result["protocol"] == "pickapic_pairwise_with_ties" and result["n_pairs"] == 4
    assert result["accuracy"] == pytest.approx(expected) and result["strict_accuracy"] == pytest.approx(expected)
    assert 0 < expected < 1  # the hand-made data has right and wrong pairs

    ranked = [{"prompt": prompts[0], "images": images[:4], "scores": [4.0, 3.0, 2.0, 1.0]},
              {"prompt": prompts[1], "images": images[4:], "scores": [1.0, 1.0, 2.0, 3.0]}]
    write_ranked_jsonl(ranked, tmp_path / "ranked" / "ranked.jsonl")
    assert main(["eval-scorer", *_cli_args("pickscore", tiny["pickscore"]), "--kind", "ranked",
                 "--data", str(tmp_path / "ranked" / "ranked.jsonl")]) == 0
    (result,) = _json_lines(capsys.readouterr().out)
    from scorers.accuracy import hpdv2_ranking_accuracy, imagereward_accuracy

    # the reader sorts best first (stable on ties): list 2 becomes images [7, 6, 4, 5] with scores [3, 2, 1, 1]
    pred = [s.score(images[:4], prompts[0]).tolist(), s.score([images[i] for i in (7, 6, 4, 5)], prompts[1]).tolist()]
    gt = [[1, 2, 3, 4], [1, 2, 3, 3]]
    assert result["protocol"] == "hpdv2_ranking_accuracy"
    assert result["accuracy"] == pytest.approx(hpdv2_ranking_accuracy(pred, gt))
    assert result["imagereward_accuracy"] == pytest.approx(imagereward_accuracy(pred, gt))


@pytest.mark.slow
def test_label_cli_writes_data_the_loader_reads(tiny, tmp_path, capsys):
    from mmalign.data import load_preference_data
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline
    from scorers.ensemble import ensemble_scores

    pipe_dir = save_tiny_pipeline("sd15", tmp_path / "pipe")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on the left\n\na blue square at the top\n")
    out = tmp_path / "labelled"
    args = ["label", "--pipeline", str(pipe_dir), "--prompts", str(prompts), "--per-prompt", "3",
            "--scorer", "hpsv2,aesthetic", "--output", str(out), "--steps", "2", "--pairs", "all",
            "--guidance-scale", "1.0"]
    for name in ("hpsv2", "aesthetic"):
        for key, value in tiny[name].items():
            args += ["--scorer-arg", f"{name}.{key}={json.dumps(value) if isinstance(value, dict) else value}"]
    assert main(args) == 0
    summary = json.loads((out / "label_summary.json").read_text())
    assert summary["prompts"] == 2 and summary["n_pairs"] == 2 * 3

    ranked = load_preference_data(out / "ranked.jsonl", "ranked")
    assert len(ranked) == 2
    item = ranked[0]
    assert len(item["images"]) == 3 and item["scores"] == sorted(item["scores"], reverse=True)
    # the ensemble scores are the mean of the per-prompt z-scores of the recorded per-scorer scores, and the
    # recorded scores are what the scorers give on the saved (lossless PNG) images
    raw = [json.loads(line) for line in (out / "ranked.jsonl").read_text().splitlines()]
    per = {n: torch.tensor([r["scorer_scores"][n] for r in raw]) for n in ("hpsv2", "aesthetic")}
    # (the label writes Reward.combine with weights 1/2: the ensemble bit for bit)
    assert torch.equal(ensemble_scores({n: v.view(2, 3) for n, v in per.items()}),
                       torch.tensor([r["scores"] for r in raw], dtype=torch.float64))
    hps = scorers.load_scorer("hpsv2", **tiny["hpsv2"])
    saved = [Image.open(out / p) for p in raw[0]["images"]]
    torch.testing.assert_close(hps.score(saved, raw[0]["prompt"]), per["hpsv2"][0], atol=1e-4, rtol=0)

    pairs = load_preference_data(out / "pairs.parquet")
    assert len(pairs) + pairs.stats.dropped_tie == 6
    first = pairs[0]
    assert first["prompt"] == "a red circle on the left"
    scores_by_key = {}
    for r in raw:
        for p, sc in zip(r["images"], r["scores"]):
            from mmalign.data import image_key

            scores_by_key[image_key((out / p).read_bytes())] = sc
    for i in range(len(pairs)):
        it = pairs[i]
        assert scores_by_key[it["chosen_key"]] > scores_by_key[it["rejected_key"]]

    # ... and the diffusion recipe trains on it (Diffusion-DPO, LoRA, one step on the labelled pairs)
    import importlib.util

    recipe_path = REPO / "recipes" / "diffusion.py"
    spec = importlib.util.spec_from_file_location("diffusion_recipe", recipe_path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    config = recipe_path.parent / "configs" / "diffusion" / "toy_dpo.yaml"
    recipe.main(["--config", str(config), f"model.pretrained={pipe_dir}", f"data.path={out / 'pairs.parquet'}",
                 "data.resolution=32", f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=1",
                 "train.batch_size=2", "validation.prompts=[]", "eval.enabled=false",  # the toy judge's 648 images
                 f"output_dir={tmp_path / 'run'}"])
    run_summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert run_summary["steps"] == 1 and np.isfinite(run_summary["final"]["loss"])
    assert (tmp_path / "run" / "pytorch_lora_weights.safetensors").is_file()
