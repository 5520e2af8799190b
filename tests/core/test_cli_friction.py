"""Issue 18, newcomer friction: every subcommand's bad input is one line + exit 2, one option vocabulary with
defaults in ``--help``, progress bars and closing lines, shipped paths that work from any directory, ties /
merged files / duplicate perturbations reported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.cli import build_parser, main
from tests.helpers import REPO

TOY_CKPT = REPO / "assets" / "toy" / "scorer" / "HPS_toy_compressed.pt"
TOY_VIDEOS = REPO / "assets" / "videos" / "toy"
MODEL_COMMANDS = ("score", "eval-scorer", "label", "evaluate", "ppd-sample", "cache", "smpo-labels",
                  "temple make-pairs")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    ok = folder / "a_ok.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(ok)
    data = ok.read_bytes()
    bad = folder / "b_truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    return {"ok": ok, "bad": bad, "folder": folder}


@pytest.fixture
def bars(monkeypatch) -> list[str]:
    """Descriptions of the progress bars made (the suite sets TQDM_DISABLE, so they are recorded, not drawn)."""
    import tqdm.auto

    import mmalign.mllm.video.temple_pairs as temple_pairs

    made: list[str] = []
    real = tqdm.auto.tqdm

    class record(real):  # noqa: N801 - stands in for the tqdm class (others subclass it)
        def __init__(self, *args, **kwargs):
            if not kwargs.get("disable"):
                made.append(str(kwargs.get("desc")))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", record)
    monkeypatch.setattr(temple_pairs, "tqdm", record)
    return made


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]


def _bad_cases(tmp: Path, images: dict[str, Path]) -> dict[str, list[str]]:
    missing = str(tmp / "missing")
    return {
        "score-truncated-image": ["score", "--scorer", "toy", "--checkpoint", str(TOY_CKPT),
                                  "--images", str(images["bad"]), "--prompts", "x"],
        "score-unknown-scorer": ["score", "--scorer", "nosuch", "--images", str(images["ok"])],
        "score-unusable-device": ["score", "--scorer", "toy", "--checkpoint", str(TOY_CKPT), "--images",
                                  str(images["ok"]), "--prompts", "x", "--device", "cuda:99"],
        "eval-scorer-missing-data": ["eval-scorer", "--scorer", "toy", "--checkpoint", str(TOY_CKPT),
                                     "--data", missing],
        "check-data-missing": ["check-data", missing],
        "export-missing": ["export", missing, "--out", str(tmp / "x")],
        "cache-missing-config": ["cache", "--config", missing],
        "smpo-labels-missing-config": ["smpo-labels", "--config", missing],
        "temple-missing-videos": ["temple", "make-pairs", "--model", "tiny:qwen2vl", "--videos", missing,
                                  "--out", str(tmp / "x")],
        "label-missing-prompts": ["label", "--pipeline", missing, "--prompts", missing, "--per-prompt", "2",
                                  "--scorer", "toy", "--out", str(tmp / "x")],
        "evaluate-missing-aligned": ["evaluate", missing, "--scorer", "toy", "--prompts", "toy-heldout",
                                     "--out", str(tmp / "x")],
        "evaluate-bad-seeds": ["evaluate", missing, "--scorer", "toy", "--prompts", "toy-heldout", "--seeds", "a",
                               "--out", str(tmp / "x")],
        "ppd-sample-missing-adapter": ["ppd-sample", missing, missing, "--user", "a", "--prompts", "x",
                                       "--out", str(tmp / "x.png"), "--device", "cpu"],
    }


@pytest.mark.parametrize("case", list(_bad_cases(Path("/t"), {"ok": Path("o"), "bad": Path("b")})))
def test_bad_input_is_one_line_and_exit_2(case, images, tmp_path, capsys):
    argv = _bad_cases(tmp_path, images)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("mmalign ") and "Traceback" not in err, err
    if case == "score-truncated-image":
        assert str(images["bad"]) in lines[0] and "truncated" in lines[0]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    out = {}
    for name, p in build_parser()._subparsers._group_actions[0].choices.items():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            out.update({f"{name} {n}": sp for n, sp in nested[0].choices.items()})
        else:
            out[name] = p
    return out


def test_one_option_vocabulary_with_defaults_in_help():
    parsers = _parsers()
    for name, p in parsers.items():
        by_flag = {s: a for a in p._actions for s in a.option_strings}
        for old, new in (("--output", "--out"), ("--prompt", "--prompts"), ("--guidance", "--guidance-scale")):
            if old in by_flag or new in by_flag:
                assert by_flag.get(old) is by_flag.get(new) is not None, f"{name}: {old} and {new} differ"
        if name in MODEL_COMMANDS:
            assert by_flag["--device"].default == "auto", name
        text = p.format_help()
        assert "(default:" in text, name
    assert "(default: auto)" in parsers["ppd-sample"].format_help()
    assert "(default: 30)" in parsers["label"].format_help()  # --steps


def test_score_skips_unreadable_with_closing_line(images, capsys, bars):
    assert main(["score", "--scorer", "toy", "--checkpoint", str(TOY_CKPT), "--images", str(images["folder"]),
                 "--prompt", "a red circle", "--on-error", "skip", "--probs"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in rows] == [str(images["ok"])] and rows[0]["prob"] == pytest.approx(1.0)
    assert bars == ["score"]
    assert "scored 1 of 2 images with toy; skipped 1 unreadable" in err.splitlines()[-1]


def test_shipped_defaults_work_from_another_directory(images, tmp_path, monkeypatch, capsys):
    from mmalign.config import load_config
    from mmalign.diffusion.build import normalize_config
    from mmalign.diffusion.config import DiffusionRecipeConfig
    from mmalign.run_config import save_run_config

    monkeypatch.chdir(tmp_path)
    assert main(["score", "--scorer", "toy", "--images", str(images["ok"]), "--prompts", "x"]) == 0, \
        capsys.readouterr().err
    cfg = load_config(DiffusionRecipeConfig, REPO / "recipes" / "configs" / "diffusion" / "toy_ppd.yaml")
    normalize_config(cfg)
    for value in (cfg.model.pretrained, cfg.data.path):
        assert Path(value).is_absolute() and Path(value).exists(), value
    saved = save_run_config(cfg, tmp_path / "run")
    assert Path(load_config(DiffusionRecipeConfig, saved).model.pretrained) == REPO / "assets" / "toy" / "pipeline"


def _pickapic(path: Path, labels: list[float]) -> Path:
    from mmalign.data import write_pickapic_parquet

    rng = np.random.default_rng(1)
    rows = [{"caption": f"a red circle {i}", "label_0": lab,
             "jpg_0": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
             "jpg_1": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))}
            for i, lab in enumerate(labels)]
    return write_pickapic_parquet(rows, path)


def test_eval_scorer_scores_ground_truth_ties(tmp_path, capsys, bars):
    import scorers
    from scorers.accuracy import pairwise_probs, pickapic_accuracy

    labels = [1.0, 0.5, 0.0, 0.5, 1.0, 0.5]
    data = _pickapic(tmp_path / "pairs.parquet", labels)
    assert main(["eval-scorer", "--scorer", "toy", "--checkpoint", str(TOY_CKPT), "--data", str(data)]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["n_pairs"] == 6 and result["n_gt_ties"] == 3 and result["gt_ties_dropped"] == 0
    s = scorers.load_scorer("toy", TOY_CKPT)
    from mmalign.data import load_preference_data

    ds = load_preference_data(data, keep_ties=True)
    items = [ds[i] for i in range(len(ds))]
    cos = [s.score([it["chosen"], it["rejected"]], it["prompt"], raw=True) * s.logit_scale for it in items]
    p0, p1 = pairwise_probs(torch.stack([c[0] for c in cos]), torch.stack([c[1] for c in cos]))
    expected = pickapic_accuracy(p0, p1, torch.tensor([it.get("label_0", 1.0) for it in items]))
    assert result["accuracy"] == pytest.approx(expected) and result["chance"] == pytest.approx(0.5)
    assert "3 ground-truth ties scored" in err.splitlines()[-1] and bars == ["eval-scorer"]
    assert main(["eval-scorer", "--scorer", "toy", "--checkpoint", str(TOY_CKPT), "--data", str(data),
                 "--drop-ties"]) == 0
    dropped = json.loads(capsys.readouterr().out)
    assert dropped["n_pairs"] == 3 and dropped["n_gt_ties"] == 0 and dropped["gt_ties_dropped"] == 3


def test_check_data_lists_merged_files(tmp_path, capsys):
    folder = tmp_path / "data"
    files = [_pickapic(folder / "a.parquet", [1.0, 0.0]), _pickapic(folder / "heldout.parquet", [1.0])]
    assert main(["check-data", str(folder), "--no-scan"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["merged_files"] == [str(f) for f in files]
    assert f"3 items from 2 file(s): {files[0]}, {files[1]}" in err


def test_temple_drops_duplicate_perturbations_and_reports_skips(tmp_path, capsys, bars):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    videos = tmp_path / "videos.txt"
    videos.write_text(f"{TOY_VIDEOS / 'left_000.mp4'}\n{TOY_VIDEOS / 'up_000.mp4'}\n{broken}\n")
    out = tmp_path / "pairs"
    assert main(["temple", "make-pairs", "--model", "tiny:qwen2vl", "--videos", str(videos), "--output", str(out),
                 "--kinds", "reverse,shuffle", "--magnitudes", "2", "--frames", "8", "--max-new-tokens", "2",
                 "--max-length-ratio", "0", "--device", "cpu"]) == 0
    stdout, err = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["generated"] == 4 and report["dropped"]["shuffle: same frame order as reverse"] == 2
    rows = [json.loads(x) for x in (out / "pairs_r2.jsonl").read_text().splitlines()]
    orders = [(r["videos"][0], tuple(r["frame_indices"])) for r in rows]
    assert len(orders) == len(set(orders))
    closing = err.splitlines()[-1]
    # one bar of ours; transformers' own bars of saving the tiny placeholder and loading it, as for any checkpoint
    assert [b for b in bars if b not in ("Writing model shards", "Loading weights")] == ["temple make-pairs"]
    assert closing.startswith("mmalign temple make-pairs: kept") and "skipped 1 unreadable video(s)" in closing
    assert str(broken) in closing and json.loads(stdout)["unreadable_files"] == [str(broken)]


def test_toy_eval_shows_progress(bars):
    from diffusers import StableDiffusionPipeline

    from mmalign.toy.evaluate import evaluate_pipeline

    pipe = StableDiffusionPipeline.from_pretrained(REPO / "assets" / "toy" / "pipeline", safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    result = evaluate_pipeline(pipe, ["a small red circle at the top"], [0, 1], num_inference_steps=1, desc="toy eval (base)")
    assert result["num_images"] == 2
    assert bars[-1] == "toy eval (base)"
