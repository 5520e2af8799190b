"""``mmalign evaluate`` end to end on tiny SD1.5 / SDXL / SD3 / FLUX pipelines with a LoRA each, against an
independent computation (the pipeline's own ``load_lora_weights``, ``generate()`` with one generator per image
seeded ``seed * 1000003 + prompt index``, ``scorers.load_scorer``); resume; the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.cli import main

PROMPTS = ["a red square", "a blue circle on the left"]
SEEDS = [0, 3]


def _prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "category": c}) + "\n" for p, c in zip(PROMPTS, ["a", "b"])))
    return str(path)


def _args(aligned, base, prompts, out, scorer_args, *extra):
    return ["evaluate", str(aligned), "--base", str(base), "--prompts", prompts, "--seeds", "0,3", "--steps", "2",
            "--guidance-scale", "2.0", "--height", "32", "--width", "32", "--images-per-batch", "4", "--device", "cpu", "--no-progress",
            "--bootstrap", "200", "--out", str(out), *scorer_args, *extra]


def _independent(base_dir, lora_dir, scorer_ckpt):
    """Images and pickscore scores of base and aligned computed without mmalign.evaluation."""
    from diffusers import DiffusionPipeline

    from mmalign.diffusion.sampling import generate
    from scorers import load_scorer

    caps = [p for p in PROMPTS for _ in SEEDS]
    seeds = [s * 1_000_003 + i for i in range(len(PROMPTS)) for s in SEEDS]
    pipe = DiffusionPipeline.from_pretrained(base_dir)
    pipe.set_progress_bar_config(disable=True)
    scorer = load_scorer("pickscore", checkpoint=scorer_ckpt["pickscore"]["checkpoint"])
    out = {}
    for which in ("base", "aligned"):
        if which == "aligned":
            pipe.load_lora_weights(lora_dir)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        images = generate(pipe, caps, num_inference_steps=2, guidance_scale=2.0, generator=gens, output_type="np",
                          height=32, width=32)
        uint8 = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
        out[which] = (uint8, scorer.score([Image.fromarray(im) for im in uint8], caps).double().numpy())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sd15", "sdxl", "sd3", "flux"])
def test_lora_vs_base_equals_an_independent_computation(tiny_models, tiny_scorer_args, tmp_path, kind):
    base, lora = tiny_models[kind]
    args, ckpt = tiny_scorer_args
    out = tmp_path / "eval"
    assert main(_args(lora, base, _prompt_file(tmp_path), out, args)) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["aligned_kind"] == "lora" and ev["num_images"] == 4 and ev["categories"] == ["a", "b"]
    ref = _independent(base, lora, ckpt)
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    for which in ("base", "aligned"):
        saved = np.stack([np.asarray(Image.open(out / r["images"][which])) for r in rows])
        assert np.abs(saved.astype(int) - ref[which][0].astype(int)).max() <= 1
        got = np.array([r["scores"]["pickscore"][which] for r in rows])
        assert got == pytest.approx(ref[which][1], abs=1e-3)
        assert ev["scorers"]["pickscore"][which]["mean"] == pytest.approx(got.mean(), abs=1e-9)
    assert np.abs(ref["base"][0].astype(int) - ref["aligned"][0].astype(int)).max() > 0  # the LoRA changes images
    b, a = ref["base"][1], ref["aligned"][1]
    row = ev["scorers"]["pickscore"]
    assert row["wins"] == int((a > b).sum()) and row["losses"] == int((a < b).sum())
    assert set(row["per_category"]) == {"a", "b"} and row["per_category"]["a"]["base"]["n"] == 2
    assert set(ev["scorers"]) == {"pickscore", "aesthetic"}
    for name in ("report.html", "plots/win_rate.png", "plots/scores_pickscore.png", "grids/samples.png",
                 "plots/win_rate_by_category_aesthetic.png", "grids/largest_gains.png"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "plots/win_rate.png" in html and "grids/samples.png" in html


@pytest.mark.slow
def test_resume_regenerates_only_missing_images_and_a_complete_folder_loads_no_model(
        tiny_models, tiny_scorer_args, tmp_path, monkeypatch, capsys):
    import mmalign.evaluation.runner as runner

    base, lora = tiny_models["sd15"]
    args, _ = tiny_scorer_args
    prompts, out = _prompt_file(tmp_path), tmp_path / "eval"
    assert main(_args(lora, base, prompts, out, args)) == 0
    first = json.loads((out / "eval.json").read_text())
    assert first["generated_here"] == {"base": 4, "aligned": 4} and not first["resumed"]
    kept = (out / "images" / "base" / "00001.png").stat().st_mtime_ns
    removed = out / "images" / "aligned" / "00002.png"
    before = np.asarray(Image.open(removed))
    removed.unlink()

    loads = []
    real = runner.load_pipeline
    monkeypatch.setattr(runner, "load_pipeline", lambda *a, **k: loads.append(a) or real(*a, **k))
    assert main(_args(lora, base, prompts, out, args)) == 0
    second = json.loads((out / "eval.json").read_text())
    assert second["generated_here"] == {"base": 0, "aligned": 1} and second["resumed"]
    assert len(loads) == 1  # only the aligned model (base pipeline + LoRA) was loaded
    assert (out / "images" / "base" / "00001.png").stat().st_mtime_ns == kept
    assert np.array_equal(np.asarray(Image.open(removed)), before)
    assert second["scorers"] == first["scorers"]

    def refuse(*a, **k):
        raise AssertionError("a complete folder must not load a model")

    monkeypatch.setattr(runner, "load_pipeline", refuse)
    assert main(_args(lora, base, prompts, out, args)) == 0
    assert json.loads((out / "eval.json").read_text())["generated_here"] == {"base": 0, "aligned": 0}

    capsys.readouterr()
    assert main(_args(lora, base, prompts, out, args, "--steps", "3")) == 2  # other images: refuse to mix them
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds another evaluation" in err[0] and "num_inference_steps was 2, now 3" in err[0]


@pytest.mark.slow
def test_merged_pipeline_against_base(tiny_models, tiny_scorer_args, tmp_path):
    """``<aligned>`` a full pipeline folder (here a differently seeded tiny SD1.5): compared with ``--base``."""
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline

    base, _ = tiny_models["sd15"]
    other = save_tiny_pipeline("sd15", tmp_path / "other", seed=1)
    args, _ = tiny_scorer_args
    out = tmp_path / "eval"
    assert main(_args(other, base, _prompt_file(tmp_path), out, args, "--seeds", "0")) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["aligned_kind"] == "pipeline" and ev["num_images"] == 2 and ev["seeds"] == [0]
