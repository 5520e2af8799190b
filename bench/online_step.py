"""One GRPO epoch through mmalign's loop next to a transcription of flow_grpo's sampler + train step (issue 24 item 9).

    python bench/online_step.py [--prompts 4] [--group 4] [--steps 10] [--resolution 64] [--repeats 2]

Both sides run on the same small SD3 (``mmalign.testing.tiny_diffusion`` ``sd3``: the real SD3 classes with tiny
random weights, saved and reloaded), the same prompts, group size, sampler steps, CFG 4.5, noise level 0.7,
timestep_fraction 0.99, batch and LoRA (r 8 on the attention projections), in float32 on this machine's CPU:

* **mmalign** — ``recipes/diffusion.py`` on ``toy_grpo.yaml`` (the toy scorer as the reward) with flow_grpo's SDE
  settings, for exactly one epoch (rollout phase +
  optimisation phase inside the shared loop): rollout seconds from ``summary.json["online_epochs"]``, the
  optimisation seconds the rest of the loop's ``train_seconds``;
* **flow_grpo transcription** — written here from yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd ``flow_grpo/diffusers_patch/
  sd3_pipeline_with_logprob.py`` (the denoising loop: CFG on ``[uncond; cond]`` in one batch, the transformer, the
  guided velocity, ``sde_step_with_logprob`` of ``sd3_sde_with_logprob.py`` in float32, every latent and log-prob
  kept) and ``scripts/train_sd3.py`` ``train`` (per sample batch and per trained timestep: the transformer on
  ``[uncond; cond]``, the unconditional branch detached, the SDE step's log-prob of the stored next latent, the
  PPO-clip loss on the advantages, ``backward``; one optimiser step per ``gradient_accumulation_steps``). Decoding
  and the reward are left out on that side (timed separately on ours: ``decode_score_s``).

Prints JSON: seconds of each phase on each side and the ratios (ours / theirs). Recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
           "attn.add_v_proj", "attn.to_add_out"]


def flow_grpo_sde_step(v: torch.Tensor, sigma: torch.Tensor, sigma_prev: torch.Tensor, sigma_max: torch.Tensor,
                       x: torch.Tensor, noise_level: float, prev: torch.Tensor | None, generator=None):
    """flow_grpo ``sde_step_with_logprob`` (sd3_sde_with_logprob.py), float32: returns (x_prev, log_prob, mean)."""
    v, x = v.float(), x.float()
    sigma, sigma_prev = sigma.view(-1, 1, 1, 1), sigma_prev.view(-1, 1, 1, 1)
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    if prev is None:
        prev = mean + std_dev_t * torch.sqrt(-dt) * torch.randn(x.shape, generator=generator)
    std = std_dev_t * torch.sqrt(-dt)
    log_prob = (-((prev.detach() - mean) ** 2) / (2 * std**2) - torch.log(std)
                - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi))))
    return prev, log_prob.mean(dim=tuple(range(1, log_prob.ndim))), mean


def flow_grpo_epoch(pipe, prompts: list[str], args) -> dict:
    """The transcription (module docstring); returns its phase seconds."""
    transformer, scheduler = pipe.transformer, pipe.scheduler
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=True,
                                                             negative_prompt=[""] * len(prompts), device="cpu")
    embeds = embeds.repeat_interleave(args.group, 0)
    pooled = pooled.repeat_interleave(args.group, 0)
    neg, neg_pooled = neg.repeat_interleave(args.group, 0), neg_pooled.repeat_interleave(args.group, 0)
    n = embeds.shape[0]
    size = args.resolution // pipe.vae_scale_factor
    scheduler.set_timesteps(args.steps)
    sigmas = scheduler.sigmas.float()
    lat_all, lp_all = [], []
    with torch.no_grad():
        for start in range(0, n, args.batch):
            sl = slice(start, start + args.batch)
            x = torch.randn((embeds[sl].shape[0], transformer.config.in_channels, size, size), generator=g)
            lats, lps = [x], []
            for i, t in enumerate(scheduler.timesteps):
                inp = torch.cat([x, x])
                out = transformer(hidden_states=inp, timestep=t.expand(inp.shape[0]),
                                  encoder_hidden_states=torch.cat([neg[sl], embeds[sl]]),
                                  pooled_projections=torch.cat([neg_pooled[sl], pooled[sl]]), return_dict=False)[0]
                u, c = out.float().chunk(2)
                v = u + 4.5 * (c - u)
                x, lp, _ = flow_grpo_sde_step(v, sigmas[i].expand(x.shape[0]), sigmas[i + 1].expand(x.shape[0]),
                                              sigmas[1], x, 0.7, None, g)
                lats.append(x)
                lps.append(lp)
            lat_all.append(torch.stack(lats, 1))
            lp_all.append(torch.stack(lps, 1))
    latents, log_probs = torch.cat(lat_all), torch.cat(lp_all)
    t_rollout = time.perf_counter() - t0
    adv = torch.randn(n, generator=g)  # the reward is not part of this side's timing
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    trained = int(args.steps * 0.99)
    t1 = time.perf_counter()
    micro = 0
    for start in range(0, n, args.batch):
        sl = slice(start, start + args.batch)
        for j in range(trained):
            x = latents[sl, j]
            inp = torch.cat([x, x])
            t = scheduler.timesteps[j]
            out = transformer(hidden_states=inp, timestep=t.expand(inp.shape[0]),
                              encoder_hidden_states=torch.cat([neg[sl], embeds[sl]]),
                              pooled_projections=torch.cat([neg_pooled[sl], pooled[sl]]), return_dict=False)[0]
            u, c = out.float().chunk(2)
            v = u.detach() + 4.5 * (c - u.detach())
            _, lp, _ = flow_grpo_sde_step(v, sigmas[j].expand(x.shape[0]), sigmas[j + 1].expand(x.shape[0]),
                                          sigmas[1], x, 0.7, latents[sl, j + 1])
            ratio = torch.exp(lp - log_probs[sl, j])
            a = adv[sl].clamp(-5, 5)
            loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - 1e-4, 1 + 1e-4)).mean()
            (loss / (args.accum * trained)).backward()
            micro += 1
            if micro % (args.accum * trained) == 0:
                opt.step()
                opt.zero_grad()
    return {"rollout_s": t_rollout, "optimise_s": time.perf_counter() - t1, "trained_steps": trained,
            "micro_batches": micro}


def mmalign_epoch(model_dir: Path, prompt_file: Path, out: Path, args) -> dict:
    from mmalign.recipe_entry import run_recipe_file

    samples = args.prompts * args.group
    trained = int(args.steps * 0.99)
    steps_per_epoch = samples * trained // (args.batch * args.accum * trained)
    argv = ["--config", str(REPO / "recipes/configs/diffusion/toy_grpo.yaml"), f"model.pretrained={model_dir}",
            f"data.path={prompt_file}", f"output_dir={out}", f"data.resolution={args.resolution}",
            "model.gradient_checkpointing=false", "train.mixed_precision=no", f"train.batch_size={args.batch}",
            f"train.grad_accum={args.accum * trained}", f"train.max_steps={steps_per_epoch}",
            "train.progress_bar=false", "train.checkpoint_every=0", "validation.prompts=[]", "export.enabled=false",
            f"method.grpo.prompts_per_epoch={args.prompts}", f"method.grpo.group_size={args.group}",
            f"method.grpo.num_steps={args.steps}", f"method.grpo.rollout_batch_size={args.batch}",
            "method.grpo.kl_beta=0", "method.grpo.sde=flow_grpo", "method.grpo.noise_level=0.7",
            "method.grpo.guidance_scale=4.5", "method.grpo.timestep_fraction=0.99", "method.grpo.clip_range=1e-4",
            "lora.rank=8", "lora.alpha=8", f"lora.target_modules=[{','.join(TARGETS)}]", "train.lr=1e-4",
            "train.log_every=1000", "eval.enabled=false"]
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
        summary = run_recipe_file(REPO / "recipes" / "diffusion.py", argv)
    epoch = json.loads((out / "summary.json").read_text())["online_epochs"][0]
    rollout = epoch["rollout_seconds"]
    return {"rollout_and_score_s": rollout, "optimise_s": summary["train_seconds"] - rollout,
            "steps": summary["steps"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2, help="sample batches per optimiser step")
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig

    from mmalign.testing.tiny_diffusion import save_tiny_pipeline
    from mmalign.toy.captions import train_captions

    tmp = Path(tempfile.mkdtemp(prefix="online_step_"))
    model_dir = save_tiny_pipeline("sd3", tmp / "sd3")
    prompts = train_captions()[: args.prompts]
    prompt_file = tmp / "prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n")
    ours = mmalign_epoch(model_dir, prompt_file, tmp / "ours", args)

    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(str(model_dir))
    pipe.transformer.requires_grad_(False)
    pipe.transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=TARGETS))
    for p in pipe.transformer.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    theirs = flow_grpo_epoch(pipe, prompts, args)
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})",
        "model": "tiny SD3 (mmalign.testing.tiny_diffusion sd3), float32, CPU",
        "setup": {k: getattr(args, k) for k in ("prompts", "group", "steps", "batch", "accum", "resolution")},
        "mmalign": ours, "flow_grpo_transcription": theirs,
        "ratio_rollout": ours["rollout_and_score_s"] / theirs["rollout_s"],
        "ratio_optimise": ours["optimise_s"] / theirs["optimise_s"],
        "ratio_epoch": (ours["rollout_and_score_s"] + ours["optimise_s"]) / (theirs["rollout_s"] + theirs["optimise_s"]),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
