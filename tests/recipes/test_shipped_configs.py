"""Every shipped recipe config runs as a user launches it (issue 14).

Discovered by glob: a new YAML under ``recipes/configs/<family>/`` is a new case, and it fails until its model id
has a tiny stand-in below. Each case runs the real recipe in-process with only model/data paths and sizes
replaced (training, sampler and inversion steps, batch, accumulation, resolution, frames, caption / seed /
validation-prompt counts, generated tokens) on tiny random-weight models saved in the released layout of the
architecture the config names (real schedulers, SD2.1 v-prediction, SDXL's two text encoders, each VLM's processor
and chat template). Validation prompts are rendered (reference grid before training and the final grid) and
checked to be finite, non-constant images.

Modes (``train.mixed_precision`` / ``train.autocast``):

* ``shipped`` — the YAML's own precision; on CPU accelerate disables autocast for fp16, so fp16 configs already
  run their components in fp16 without autocast here, as under DeepSpeed on GPUs;
* ``bf16`` — bf16 with autocast on;
* ``no_autocast`` — the shipped precision with autocast disabled (``train.autocast=false``, what DeepSpeed does
  to fp16/bf16); where the shipped precision has no autocast on CPU anyway (fp32, fp16) it runs bf16 without
  autocast instead, the case that differs from ``shipped``.

Every config runs in every mode (issue 23: a mode that skipped configs missed PPD's dtype crash without
autocast).
"""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import REPO

CONFIG_DIR = REPO / "recipes" / "configs"
CONFIGS = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.glob("*/*.yaml"))

TINY_DIFFUSION = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "stabilityai/stable-diffusion-2-1": "sd2v",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "stabilityai/stable-diffusion-3.5-medium": "sd3",
    "stabilityai/stable-diffusion-3-medium-diffusers": "sd3",
    "black-forest-labs/FLUX.1-dev": "flux",
}
TINY_VLM = {"Qwen/Qwen2-VL-2B-Instruct": "qwen2vl", "Qwen/Qwen2.5-VL-3B-Instruct": "qwen25vl",
            "llava-hf/llava-1.5-7b-hf": "llava"}
TINY_VIDEO = {"Qwen/Qwen2.5-VL-7B-Instruct": "video:qwen25vl", "llava-hf/LLaVA-Video-7B-Qwen2-hf": "video:llavaov",
              "tiny:qwen2vl-toy": "tiny:qwen2vl-toy", "runs/toy_sft": "video:qwen2vl-toy"}
"""Released id (or shipped path) → stand-in: ``tiny:<family>`` is the recipe's in-process builder (as toy_sft.yaml
ships it), another value a saved folder from the ``models`` fixture (built once per session; the recipe's
``tiny:qwen25vl`` / ``tiny:llavaov`` builders on these configs: tests/mllm/video/test_recipe_configs.py)."""
TINY_PPD_VLM = {"llava-hf/llava-onevision-qwen2-7b-ov-chat-hf": "video:llavaov"}
DIFFUSION_DATA_VARIANTS = {"dcpo": "dual", "ppd": "per_user"}
"""Diffusion methods whose data is a variant of their registry kind (per-side captions, user ids); every other
method reads a set of its registry entry's kind (mmalign.diffusion.registry), so a new method needs no entry."""
VIDEO_DATA = {"rrpo": "rrpo", "dpo": "dpo", "vdpo": "sft", "sft": "sft"}
RECIPES: dict[str, object] = {}


def diffusion_data(method: str) -> str:
    from mmalign.diffusion.registry import method_spec

    return DIFFUSION_DATA_VARIANTS.get(method, method_spec(method).data)


def shipped(config: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / config).read_text())


def precision(cfg: dict) -> str:
    value = (cfg.get("train") or {}).get("mixed_precision", "no")
    return "no" if value in (False, None, "no") else value


MODES = ("shipped", "bf16", "no_autocast")


def mode_overrides(config: str, mode: str) -> list[str]:
    if mode == "shipped":
        return []
    if mode == "bf16":
        return ["train.mixed_precision=bf16"]  # autocast on: the default
    autocast_on_cpu = precision(shipped(config)) == "bf16"
    return ["train.autocast=false"] + ([] if autocast_on_cpu else ["train.mixed_precision=bf16"])


CASES = [pytest.param(c, m, id=f"{c.removesuffix('.yaml')}-{m}") for c in CONFIGS for m in MODES]


def recipe_main(family: str):
    if family not in RECIPES:
        RECIPES[family] = runpy.run_path(str(REPO / "recipes" / f"{family}.py"))["main"]
    return RECIPES[family]


def diffusion_overrides(cfg: dict, models, data, tmp: Path) -> list[str]:
    method = cfg["method"]["name"]
    out = [f"output_dir={tmp / 'out'}", f"data.cache_dir={tmp / 'cache'}", "train.max_steps=1",
           "train.batch_size=2", "train.grad_accum=1", "train.progress_bar=false", "validation.num_inference_steps=2"]
    out += online_overrides(cfg, models)
    prompts = (cfg.get("validation") or {}).get("prompts")
    if prompts:  # the first shipped prompt: the grid code is the same for one prompt or several
        out.append(f"validation.prompts={json.dumps(prompts[:1])}")
    if method in INVERSION_METHODS:  # sampler steps of the DDIM / ReNoise inversion (the official grid needs >= 2)
        out.append(f"method.{method}.noise.inversion_steps=2")
    pretrained = cfg["model"]["pretrained"]
    if pretrained.startswith("assets/"):  # the toy world: its own shipped model and data, fewer of them
        limit = ["data.max_rows=12" if method == "ppd" else "data.max_rows=4"]  # PPD: one user, 4 shots + 8 pairs
        users = ["method.ppd.cache_dir=" + str(tmp / "users")] if method == "ppd" else []
        return out + [*limit, "eval.max_captions=2", "eval.seeds=[0]", "eval.batch_size=2",
                      "eval.num_inference_steps=2", *users]
    assert pretrained in TINY_DIFFUSION, f"add a tiny stand-in for {pretrained!r} to TINY_DIFFUSION"
    out += [f"model.pretrained={models[TINY_DIFFUSION[pretrained]]}",
            f"data.path={data['diffusion:' + diffusion_data(method)]}", "data.resolution=32"]
    if method == "smpo":
        scorer = cfg["method"]["smpo"]["scorer"]
        out.append(f"method.smpo.scorer_checkpoint={models.scorer_checkpoint(scorer)}")
    if method == "ppd":
        ppd = cfg["method"]["ppd"]
        out += [f"method.ppd.cache_dir={tmp / 'users'}", "method.ppd.max_new_tokens=3"]
        if ppd.get("embedding") == "vlm":
            assert ppd["vlm"] in TINY_PPD_VLM, f"add a tiny stand-in for {ppd['vlm']!r} to TINY_PPD_VLM"
            out.append(f"method.ppd.vlm={models[TINY_PPD_VLM[ppd['vlm']]]}")
    return out


ONLINE_METHODS = ("grpo", "online_dpo")
INVERSION_METHODS = ("smpo", "inpo")


def online_overrides(cfg: dict, models) -> list[str]:
    """The online methods (issue 24): two prompts x two images per epoch, two sampler steps, and each reward
    scorer's tiny checkpoint in its official layout (the toy scorer is the shipped one)."""
    method = cfg["method"]["name"]
    if method not in ONLINE_METHODS:
        return []
    out = [f"method.{method}.{k}={v}" for k, v in (("prompts_per_epoch", 2), ("group_size", 2), ("num_steps", 2),
                                                    ("eval_steps", 2), ("rollout_batch_size", 4))]
    if (cfg["method"].get(method) or {}).get("sde_window_size"):
        out.append(f"method.{method}.sde_window_size=1")
        out.append(f"method.{method}.sde_window_range=[0,1]")
    for name in cfg["reward"]["scorers"]:
        if name == "toy":
            continue
        kwargs = json.loads((Path(models["scorers"]) / "kwargs.json").read_text())[name]
        out.append(f"reward.checkpoints.{name}={kwargs.pop('checkpoint')}")
        for key, value in kwargs.items():
            out.append(f"reward.scorer_args.{name}.{key}={value if isinstance(value, str) else json.dumps(value)}")
    return out


def vlm_overrides(cfg: dict, models, data, tmp: Path) -> list[str]:
    pretrained = cfg["model"]["pretrained"]
    assert pretrained in TINY_VLM, f"add a tiny stand-in for {pretrained!r} to TINY_VLM"
    return [f"model.pretrained={models['vlm:' + TINY_VLM[pretrained]]}", f"data.path={data['vlm:pairs']}",
            f"output_dir={tmp / 'out'}", "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1",
            "train.progress_bar=false"]


def video_overrides(cfg: dict, models, data, tmp: Path) -> list[str]:
    pretrained = cfg["model"]["pretrained"]
    assert pretrained in TINY_VIDEO, f"add a tiny stand-in for {pretrained!r} to TINY_VIDEO"
    stand_in = TINY_VIDEO[pretrained]
    out = [f"model.pretrained={stand_in if stand_in.startswith('tiny:') else models[stand_in]}",
           f"output_dir={tmp / 'out'}", "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1",
           "train.progress_bar=false", "data.max_length=512", "video.num_frames=4", "video.max_frames=4"]
    for i, stage in enumerate(cfg.get("stages") or []):
        out += [f"stages.{i}.data={data['video:' + VIDEO_DATA[stage['method']]]}", f"stages.{i}.max_steps=1"]
    if not cfg.get("stages"):
        out.append(f"data.path={data['video:' + VIDEO_DATA[cfg['method']['name']]]}")
    return out


OVERRIDES = {"diffusion": diffusion_overrides, "vlm": vlm_overrides, "video": video_overrides}


def check_grid(path: Path) -> None:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 1.0, f"{path.name}: a constant (black/NaN) validation grid"


@pytest.mark.slow
@pytest.mark.parametrize("config,mode", CASES)
def test_shipped_config_runs(config, mode, models, data, tmp_path, fresh_accelerate):
    family = config.split("/")[0]
    cfg = shipped(config)
    argv = ["--config", str(CONFIG_DIR / config), *OVERRIDES[family](cfg, models, data, tmp_path),
            *mode_overrides(config, mode)]
    summary = recipe_main(family)(argv)

    runs = summary.get("stages") or [summary]
    for run in runs:
        assert run["steps"] >= 1 and run["skipped_steps"] == 0, run
        assert math.isfinite(run["final"]["loss"]), run["final"]
    if family == "diffusion":
        out = tmp_path / "out"
        prompts = (cfg.get("validation") or {}).get("prompts")
        if prompts:  # the reference grid before training and the final one
            grids = sorted((out / "validation").glob("*.png"))
            assert [g.name for g in grids] == ["reference.png", "step_000001.png"], grids
            for grid in grids:
                check_grid(grid)
        if (cfg.get("toy_eval") or {}).get("enabled"):
            assert math.isfinite(summary["toy_eval"]["mean_gain"])
        assert summary.get("export") and Path(summary["export"]).exists()
    if family == "video" and (cfg.get("eval") or {}).get("toy_manifest"):
        accuracy = summary["toy_direction_accuracy"]
        assert 0.0 <= accuracy["before"] <= 1.0 and 0.0 <= accuracy["after"] <= 1.0


def test_every_family_has_cases_and_each_config_its_launch_header():
    assert {c.split("/")[0] for c in CONFIGS} == {"diffusion", "vlm", "video"}
    for config in CONFIGS:
        first = (CONFIG_DIR / config).read_text().splitlines()[0]
        assert first.startswith(f"# accelerate launch recipes/{config.split('/')[0]}.py --config "
                                f"recipes/configs/{config}"), (config, first)
