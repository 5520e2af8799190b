"""Diffusion preference training step benchmark: pairs/s, peak GiB, achieved TFLOP/s and MFU (issue #9).

Builds SD1.5- or SDXL-architecture pipelines with random weights from configs (``mmalign.testing.tiny_diffusion``; no
download) — or the tiny test pipelines with ``--tiny`` — and times **the recipe's own training step**: the config
is the recipe YAML (``recipes/configs/diffusion/<arch>_dpo[_full].yaml``, MaPO's method block from
``sdxl_mapo.yaml``) with the benchmark's overrides, the UNet is set up by ``mmalign.diffusion.build.prepare_unet``
(LoRA / full fine-tuning, reference provider, dtypes, attention, checkpointing, channels-last, compile), the step
is ``mmalign.diffusion.step_fn.make_step_fn(StepContext(...))`` and the optimizer is ``mmalign.training.optimizer.build_optimizer``
— the objects ``recipes/diffusion.py`` builds. Latents and text embeddings are given (the cached-latent path:
``CachedDataset`` examples collated by ``collate_members`` and moved to the device once), so neither the VAE nor
the text encoders nor the data loader run in the timed region.

One optimizer step = what ``mmalign.training.loop.train`` does for one micro-batch with ``grad_accum=1``: ``step_fn`` →
``accelerator.backward`` of the NaN-guarded loss (``torch.where(isfinite)``) → ``clip_grad_norm_`` → ``optimizer.step``
→ ``zero_grad(set_to_none=True)``, *without* the loop's host-side metric bookkeeping (``float()`` of every metric;
see bench/README.md), so the number is the step's, not the logger's.

Measurement: ``--warmup`` steps (compile happens there) are not timed; ``torch.cuda.synchronize`` only before and
after the timed ``--steps``. FLOPs are counted once per configuration with ``torch.utils.flop_counter.FlopCounterMode``
on one eager step (compile is bypassed with ``torch.compiler.set_stance("force_eager")``; xformers attention is
swapped for SDPA while counting, as the counter only knows aten kernels). ``model_tflop_per_step`` excludes the
recompute of gradient checkpointing (MFU convention, PaLM appendix B); ``hw_tflop_per_step`` includes it.
MFU = achieved model FLOP/s ÷ ``--peak-tflops`` (default 989 = NVIDIA H100 SXM5 dense BF16 Tensor Core peak,
H100 datasheet "1,979 teraFLOPS with sparsity"; the H200 has the same compute). ``--measure-peak`` also times an
8192³ bf16 matmul and reports MFU against that measured peak (the issue measured about 798 TFLOP/s).

GPU (the issue #9 runs):     python bench/diffusion_step.py --suite sd15   (and sdxl; see bench/RESULTS.md)
One configuration:           python bench/diffusion_step.py --arch sd15 --mode lora --method dpo --compile
CPU smoke (tests/bench):     python bench/diffusion_step.py --device cpu --tiny --steps 2 --mode lora full
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import json
import platform
import shlex
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs" / "diffusion"
H100_SXM_BF16_DENSE_TFLOPS = 989.0
"""NVIDIA H100 SXM5 BF16 Tensor Core: 1,979 TFLOP/s with 2:4 sparsity = 989.4 dense (H100 datasheet)."""

_SD15 = "--arch sd15 --mode lora --method dpo mapo"
_FAST = "--compile --channels-last --set train.optimizer=adamw_fused"
SUITES: dict[str, list[str]] = {
    # SD1.5 architecture, 512 px, bf16, LoRA r4, 4 pairs/step (the goal setting). Each suite is sized for
    # one device call (< 10 min on an H100); "sd15" runs the three in a row.
    "sd15-eager": [_SD15, "--arch sd15 --mode lora --method dpo --attention xformers"],
    "sd15-compile": [f"{_SD15} {_FAST}"],
    # Full fine-tuning against the eager frozen-reference-copy baseline, measured in the same run.
    "sd15-full": [f"--arch sd15 --mode full --method dpo --full-ft-eager-ref-copy {_FAST}"],
    # SDXL architecture, 1024 px, LoRA DPO and MaPO, without and with gradient checkpointing.
    "sdxl": ["--arch sdxl --mode lora --method dpo mapo", "--arch sdxl --mode lora --method dpo mapo "
             "--gradient-checkpointing"],
    "sdxl-compile": [f"--arch sdxl --mode lora --method dpo mapo --gradient-checkpointing {_FAST}"],
}
SUITES["sd15"] = SUITES["sd15-eager"] + SUITES["sd15-compile"] + SUITES["sd15-full"]
JSON_KEYS = (
    "bench", "arch", "mode", "method", "pairs", "resolution", "latent_size", "pairs_per_s", "step_ms", "peak_gib",
    "peak_gib_steady", "model_tflop_per_step", "hw_tflop_per_step", "forward_tflop", "step_over_forward",
    "tflops_per_s", "mfu", "peak_tflops", "setup", "gpu", "torch", "diffusers", "peft", "date",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), help="run a preset list of configurations (see SUITES); other "
                   "options given with it (--steps, --profile, --output, ...) apply to every line")
    p.add_argument("--print-suite", action="store_true", help="print the suite's expanded commands and exit")
    p.add_argument("--arch", nargs="+", default=["sd15"], choices=["sd15", "sdxl"])
    p.add_argument("--mode", nargs="+", default=["lora"], choices=["lora", "full"], help="LoRA or full fine-tuning")
    p.add_argument("--method", nargs="+", default=["dpo"], choices=["dpo", "mapo"])
    p.add_argument("--pairs", type=int, default=4, help="preference pairs per optimizer step")
    p.add_argument("--lora-rank", type=int, default=4, help="LoRA rank on to_q/to_k/to_v/to_out.0")
    p.add_argument("--resolution", type=int, default=None,
                   help="pixels (default 512 sd15, 1024 sdxl, 32 tiny); latents are resolution/8 (tiny: /2)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, allocator, cudnn autotune)")
    p.add_argument("--compile", action="store_true", help="model.compile=true (torch.compile the UNet)")
    p.add_argument("--channels-last", action="store_true", help="model.channels_last=true")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"], help="model.attn_implementation")
    p.add_argument("--gradient-checkpointing", action="store_true", help="model.gradient_checkpointing=true")
    p.add_argument("--full-ft-eager-ref-copy", action="store_true",
                   help="before each full-FT configuration, run the baseline: eager, no channels-last, SDPA, plain "
                        "AdamW, frozen reference copy; the configuration's line then carries the speed-up")
    p.add_argument("--profile", metavar="DIR", help="write a torch.profiler top-kernels table per configuration")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_DENSE_TFLOPS,
                   help="dense bf16 peak for MFU (default: H100 SXM datasheet, 989)")
    p.add_argument("--measure-peak", action="store_true", help="also time an 8192^3 bf16 matmul (measured peak)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe config override (e.g. train.optimizer=adamw_fused); repeatable")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="train.mixed_precision: auto = bf16 on CUDA, fp32 on the CPU (CPU bf16 kernels are slow)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with --tiny)")
    p.add_argument("--tiny", action="store_true", help="tiny random pipelines (CPU smoke runs)")
    p.add_argument("--cpu-threads", type=int, default=1,
                   help="torch threads with --device cpu (tiny models run fastest single-threaded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="also append the JSON lines to this file")
    return p


def check_device(args: argparse.Namespace) -> torch.device:
    """CUDA unless ``--device cpu --tiny``; a clear error otherwise."""
    device = torch.device(args.device)
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("bench/diffusion_step.py: --device cpu needs --tiny (full-size models are a GPU benchmark)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/diffusion_step.py: CUDA is not available on this machine; this benchmark measures "
                         "GPU training. For a CPU smoke run use --device cpu --tiny.")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"bench/diffusion_step.py: unsupported --device '{args.device}' (cuda, cpu)")
    return device


# ----------------------------------------------------------------------------------------------------------------
# Recipe objects


def switched_yaml(base: Path, method: str) -> Path:
    """``base`` as is, or a copy switched to ``method`` (mmalign.diffusion.registry.switch_method) in a temporary
    folder."""
    import tempfile

    import yaml

    from mmalign.diffusion.registry import switch_method

    raw = yaml.safe_load(base.read_text())
    if raw["method"]["name"] == method:
        return base
    out = Path(tempfile.mkdtemp(prefix="bench_config_")) / base.name
    out.write_text(yaml.safe_dump(switch_method(raw, method), sort_keys=False))
    return out


def recipe_config(args: argparse.Namespace, arch: str, mode: str, method: str, baseline: bool = False):
    """The recipe's config for this configuration: the arch's DPO YAML (LoRA or ``_full``) + the benchmark's
    overrides; MaPO takes the method block of ``sdxl_mapo.yaml`` (the only MaPO recipe config)."""
    from mmalign.config import load_config
    from mmalign.diffusion.config import DiffusionRecipeConfig

    yaml_arch = "sd15" if arch == "sd15" else "sdxl"
    base = CONFIGS / f"{yaml_arch}_dpo{'_full' if mode == 'full' else ''}.yaml"
    overrides = [
        f"lora.rank={args.lora_rank if mode == 'lora' else 0}", f"train.mixed_precision={mixed_precision(args)}",
        f"train.batch_size={args.pairs}", "train.grad_accum=1", f"data.resolution={resolution(args, arch)}",
        "method.empty_prompt_prob=0.0", "validation.prompts=[]", f"train.seed={args.seed}",
        f"model.compile={args.compile and not baseline}", f"model.channels_last={args.channels_last and not baseline}",
        f"model.attn_implementation={'sdpa' if baseline else args.attention}",
        f"model.gradient_checkpointing={args.gradient_checkpointing}",
    ]
    if method == "mapo":  # the DPO YAML without what MaPO does not read (method.beta), then MaPO's own options
        mapo = load_config(DiffusionRecipeConfig, CONFIGS / "sdxl_mapo.yaml").method
        overrides += [f"method.mapo.beta={mapo.mapo.beta}", f"method.mapo.snr={mapo.mapo.snr}"]
    overrides += list(args.overrides)
    if baseline:
        overrides.append("train.optimizer=adamw")
    cfg = load_config(DiffusionRecipeConfig, switched_yaml(base, method), overrides)
    if str(cfg.train.mixed_precision).lower() == "false":  # YAML reads a bare `no` as false (as check_config)
        cfg.train.mixed_precision = "no"
    return cfg, base


def mixed_precision(args: argparse.Namespace) -> str:
    if args.precision == "auto":
        return "no" if torch.device(args.device).type == "cpu" else "bf16"
    return {"bf16": "bf16", "fp32": "no"}[args.precision]


def resolution(args: argparse.Namespace, arch: str) -> int:
    if args.resolution:
        return args.resolution
    return 32 if args.tiny else {"sd15": 512, "sdxl": 1024}[arch]


def build_pipeline(arch: str, tiny: bool, device: torch.device, seed: int):
    from mmalign.testing import tiny_diffusion as tiny_models

    torch.manual_seed(seed)
    if tiny:
        return tiny_models.tiny_pipeline(arch, seed=seed)
    return tiny_models.full_size_pipeline(arch, dtype=torch.float32, device=device)


def parts_from_pipeline(pipe, source: str):
    """``DiffusionParts`` of an in-memory pipeline, as ``mmalign.diffusion.adapter.load_parts`` builds them after
    ``from_pretrained`` (training scheduler = DDPM from the pipeline's scheduler config; frozen VAE/encoders)."""
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline

    from mmalign.diffusion.adapter import DiffusionParts

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if isinstance(pipe, StableDiffusionXLPipeline):
        family, encoders, tokenizers = "sdxl", [pipe.text_encoder, pipe.text_encoder_2], [pipe.tokenizer, pipe.tokenizer_2]
    else:
        family, encoders, tokenizers = "sd", [pipe.text_encoder], [pipe.tokenizer]
    for module in [pipe.vae, *encoders]:
        module.requires_grad_(False).eval()
    return DiffusionParts(unet=pipe.unet, vae=pipe.vae, text_encoders=encoders, tokenizers=tokenizers,
                          scheduler=scheduler, family=family, prediction_type=scheduler.config.prediction_type,
                          pipeline_class=type(pipe), source=source, pipeline=pipe)


def cached_batch(parts, cfg, device: torch.device, latent_size: int, seed: int) -> dict[str, Any]:
    """One collated cached-latent batch on ``device``: ``CachedDataset`` examples (posterior moments, real text
    embeddings of the pipeline's encoders, time ids) stacked by the recipe's ``collate_members``."""
    from mmalign.diffusion.adapter import encode_text
    from mmalign.diffusion.batches import collate_members
    from mmalign.diffusion.cache import DTYPES

    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[cfg.data.cache_dtype]
    channels = parts.unet.config.in_channels
    res = cfg.data.resolution
    examples = []
    for i in range(cfg.train.batch_size):
        prompts = [f"a photo of object {i}", f"a photo of object {i}"]
        text = {k: v.cpu().to(dtype) for k, v in encode_text(parts, prompts, parts.text_encoders[0].device).items()}
        example = {
            "latent_mean": torch.randn(2, channels, latent_size, latent_size, generator=g).to(dtype),
            "latent_std": (0.05 * torch.rand(2, channels, latent_size, latent_size, generator=g)).to(dtype),
            "time_ids": torch.tensor([[res, res, 0, 0, res, res]] * 2, dtype=torch.float32),
            "prompt_embeds": text["prompt_embeds"], "prompts": prompts, "image_keys": [f"w{i}", f"l{i}"],
        }
        if "pooled" in text:
            example["pooled"] = text["pooled"]
        examples.append(example)
    batch = collate_members(examples)
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class RecipeStep:
    """The recipe's pieces for one configuration and one optimizer step of the shared loop (grad_accum=1)."""

    def __init__(self, cfg, parts, accelerator) -> None:
        from mmalign.diffusion.build import prepare_unet
        from mmalign.diffusion.inputs import InputBuilder
        from mmalign.diffusion.step_context import StepContext
        from mmalign.diffusion.step_fn import make_step_fn
        from mmalign.training.optimizer import build_optimizer

        self.cfg, self.parts, self.accelerator = cfg, parts, accelerator
        unet, self.reference, self.applied = prepare_unet(cfg, parts, accelerator)
        inputs = InputBuilder(parts, cfg.data.resolution, cfg.data.latent_sample, cfg.method.empty_prompt_prob,
                              cfg.method.sdxl_time_ids)
        self.ctx = StepContext(parts, inputs, self.reference, cfg.method, accelerator.device, accelerator.autocast)
        self.step_fn = make_step_fn(self.ctx, None)
        self.params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.params, cfg.train)
        self.model, self.optimizer = accelerator.prepare(unet, optimizer)
        self.model.train()

    def loss_and_backward(self, batch: dict[str, Any]) -> torch.Tensor:
        loss, _metrics = self.step_fn(self.model, batch)
        finite = torch.isfinite(loss.detach())
        self.accelerator.backward(torch.where(finite, loss, torch.zeros_like(loss)))
        return loss

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        loss = self.loss_and_backward(batch)
        if self.cfg.train.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    @torch.no_grad()
    def policy_forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """One policy forward on the step's 2 x pairs images (the FLOP unit)."""
        x0, cond = self.ctx.inputs(batch, self.ctx.device)
        t, noise = self.ctx.shared_noise(x0, batch["groups"], 2)
        return self.ctx.errors(self.model, x0, noise, t, cond)


# ----------------------------------------------------------------------------------------------------------------
# Measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def eager_sdpa(step: RecipeStep):
    """Run eagerly (bypass torch.compile) with SDPA attention, so FlopCounterMode sees every aten kernel."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from mmalign.diffusion.reference import unwrap

    unet = unwrap(step.model)
    xformers = step.applied.get("attention") == "xformers"
    if xformers:
        unet.set_attn_processor(AttnProcessor2_0())
    stance = torch.compiler.set_stance("force_eager") if step.applied.get("compile") else nullcontext()
    try:
        with stance:
            yield
    finally:
        if xformers:
            unet.enable_xformers_memory_efficient_attention()


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def step_flops(step: RecipeStep, batch: dict[str, Any]) -> dict[str, int]:
    """FLOPs of one step (policy fwd+bwd, reference fwd) and of one policy forward, counted eagerly; with gradient
    checkpointing also the step without recompute (the model FLOPs)."""
    from mmalign.diffusion.reference import unwrap

    unet = unwrap(step.model)
    with eager_sdpa(step):
        out = {"forward": count_flops(lambda: step.policy_forward(batch)),
               "hw_step": count_flops(lambda: step.loss_and_backward(batch))}
        step.optimizer.zero_grad(set_to_none=True)
        out["model_step"] = out["hw_step"]
        if step.applied.get("gradient_checkpointing"):
            unet.disable_gradient_checkpointing()
            try:
                out["model_step"] = count_flops(lambda: step.loss_and_backward(batch))
            finally:
                step.optimizer.zero_grad(set_to_none=True)
                unet.enable_gradient_checkpointing()
    return out


def measured_matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """Achieved TFLOP/s of an n^3 bf16 matmul (best of ``reps`` after warm-up)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def write_profile(step: RecipeStep, batch: dict[str, Any], path: Path, steps: int, device: torch.device) -> Path:
    """torch.profiler over ``steps`` optimizer steps; the top-kernels table (by device time) to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(batch)
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by=sort, row_limit=30))
    return path


def environment(device: torch.device) -> dict[str, Any]:
    import diffusers
    import peft

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'cpu'})"
    return {"gpu": gpu, "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def make_accelerator(cfg, device: torch.device):
    """The recipe's Accelerator (``mmalign.training.distributed.make_accelerator``: autocast in ``train.mixed_precision``); on a
    machine with a GPU, ``--device cpu`` needs ``cpu=True``."""
    from accelerate import Accelerator

    from mmalign.training.distributed import make_accelerator as recipe_accelerator

    if device.type == "cpu" and torch.cuda.is_available():
        return Accelerator(cpu=True, mixed_precision=cfg.train.mixed_precision)
    return recipe_accelerator(cfg.train, REPO / "outputs" / "bench", log_with=None)


def run_configuration(args, device: torch.device, arch: str, mode: str, method: str, baseline: bool = False,
                      matmul_peak: float | None = None) -> dict[str, Any]:
    """Measure one configuration; a CUDA out-of-memory error becomes a record with ``error`` (the run goes on)."""
    try:
        return measure(args, device, arch, mode, method, baseline, matmul_peak)
    except torch.OutOfMemoryError as exc:
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        record = {"bench": "diffusion_step", "name": f"{arch}_{mode}_{method}", "arch": arch, "mode": mode,
                  "method": method, "error": f"CUDA out of memory: {str(exc).splitlines()[0]}",
                  "peak_gib": round(peak, 3), "args": " ".join(sys.argv[1:]), **environment(device)}
    release(device)  # after the except block: the traceback (and the configuration's tensors) are gone
    return record


def measure(args, device: torch.device, arch: str, mode: str, method: str, baseline: bool,
            matmul_peak: float | None) -> dict[str, Any]:
    cfg, base = recipe_config(args, arch, mode, method, baseline)
    pipe = build_pipeline(arch, args.tiny, device, args.seed)
    parts = parts_from_pipeline(pipe, source=f"{'tiny' if args.tiny else 'random'}:{arch}")
    for module in [parts.vae, *parts.text_encoders]:
        module.to(device)
    latent_size = cfg.data.resolution // (2 if args.tiny else 8)
    batch = cached_batch(parts, cfg, device, latent_size, args.seed)
    accelerator = make_accelerator(cfg, device)
    torch.manual_seed(args.seed)
    step = RecipeStep(cfg, parts, accelerator)
    flops = step_flops(step, batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step(batch)
    _sync(device)
    peak_all = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(batch)
    _sync(device)
    seconds = time.perf_counter() - start
    peak_steady = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    steps_per_s = args.steps / seconds
    tflops = flops["model_step"] * steps_per_s / 1e12
    name = f"{arch}_{mode}_{method}" + ("_eager_ref_copy" if baseline else "")
    record: dict[str, Any] = {
        "bench": "diffusion_step", "name": name, "arch": arch + ("-tiny" if args.tiny else ""), "mode": mode,
        "method": method, "precision": cfg.train.mixed_precision, "pairs": cfg.train.batch_size, "resolution": cfg.data.resolution,
        "latent_size": latent_size, "pairs_per_s": round(cfg.train.batch_size * steps_per_s, 4),
        "step_ms": round(1000 * seconds / args.steps, 3),
        "peak_gib": None if peak_all is None else round(max(peak_all, peak_steady), 3),
        "peak_gib_steady": None if peak_steady is None else round(peak_steady, 3),
        "model_tflop_per_step": flops["model_step"] / 1e12, "hw_tflop_per_step": flops["hw_step"] / 1e12,
        "forward_tflop": flops["forward"] / 1e12, "step_over_forward": round(flops["model_step"] / flops["forward"], 4),
        "tflops_per_s": round(tflops, 3), "mfu": round(tflops / args.peak_tflops, 5), "peak_tflops": args.peak_tflops,
        "steps": args.steps, "warmup": args.warmup, "baseline_eager_ref_copy": baseline,
        "setup": {**step.applied, "optimizer": cfg.train.optimizer, "max_grad_norm": cfg.train.max_grad_norm,
                  "beta": cfg.method.mapo.beta if method == "mapo" else cfg.method.beta,
                  "lora_rank": cfg.lora.rank, "config": str(base.relative_to(REPO)),
                  "requested_attention": "sdpa" if baseline else args.attention},
        **environment(device),
    }
    if record["setup"]["attention"] != record["setup"]["requested_attention"]:
        from mmalign.diffusion.speed import xformers_works

        record["setup"]["attention_fallback"] = xformers_works(device)[1]
    if matmul_peak is not None:
        record["matmul_peak_tflops"] = round(matmul_peak, 1)
        record["mfu_vs_matmul_peak"] = round(tflops / matmul_peak, 5)
    if args.profile:
        path = Path(args.profile) / f"diffusion_step_{name}{'_compile' if cfg.model.compile else ''}.txt"
        record["profile"] = str(write_profile(step, batch, path, args.profile_steps, device))

    accelerator.free_memory()
    del step, batch, parts, pipe
    release(device)
    return record


def release(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def emit(record: dict[str, Any], output: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if output:
        with open(output, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = check_device(args)
    if device.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    matmul_peak = measured_matmul_peak(device) if args.measure_peak and device.type == "cuda" else None
    records = []
    for arch, mode, method in itertools.product(args.arch, args.mode, args.method):
        baseline = None
        if mode == "full" and args.full_ft_eager_ref_copy:
            baseline = run_configuration(args, device, arch, mode, method, baseline=True, matmul_peak=matmul_peak)
            emit(baseline, args.output)
            records.append(baseline)
        record = run_configuration(args, device, arch, mode, method, matmul_peak=matmul_peak)
        if baseline is not None and "error" not in baseline and "error" not in record:
            record["speedup_vs_eager_ref_copy"] = round(record["pairs_per_s"] / baseline["pairs_per_s"], 3)
        emit(record, args.output)
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.suite:
        return run(args)
    shared = suite_shared_args(argv if argv is not None else sys.argv[1:])
    lines = [shlex.split(line) + shared for line in SUITES[args.suite]]
    if args.print_suite:
        for line in lines:
            print(shlex.join(["python", "bench/diffusion_step.py", *line]))
        return []
    records = []
    for line in lines:
        records += run(parser.parse_args(line))
    return records


def suite_shared_args(argv: list[str]) -> list[str]:
    """``argv`` without ``--suite NAME`` / ``--suite=NAME`` and ``--print-suite``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--suite":
            skip = True
        elif not arg.startswith("--suite=") and arg != "--print-suite":
            out.append(arg)
    return out


if __name__ == "__main__":
    main()
