"""Scorer throughput: batched scoring vs a per-image loop (the way ``hpsv2.score`` / ``ImageReward.score`` run).

An HPS scorer (open_clip ``ViT-H-14`` by default, 986 M parameters) with random weights saved in the official
HPSv2 layout (``{'state_dict': fp16 tensors}``) and loaded through ``load_scorer("hpsv2", ...)`` — the
same code path as the real checkpoint. Prints one JSON line per configuration:

* ``mode=batched``: ``scorer.score(images, prompts, batch_size=B)`` — PIL preprocessing + batched forwards;
* ``mode=loop``: one ``scorer.score([image], prompt)`` call per image (per-image forwards, no checkpoint reload);
* ``mode=tensor``: ``scorer.score_tensor(pixels[B,3,H,W])`` on device-resident pixels (model + torch
  preprocessing only, the reward path).

GPU run:   python bench/scorer_throughput.py --device cuda --precision bf16
CPU smoke: python bench/scorer_throughput.py --device cpu --arch tiny --n-images 32 --batch-sizes 1,8
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmalign.testing.tiny_scorers import TINY_OPEN_CLIP
from scorers.loading import load_scorer

PRECISIONS = {"fp32": ("float32", None), "bf16": ("bfloat16", None), "bf16-autocast": ("float32", "bf16"),
              "fp16-autocast": ("float32", "fp16")}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", default="ViT-H-14", help="open_clip model name, or 'tiny' (spec §9.4 config)")
    p.add_argument("--precision", default="bf16", choices=list(PRECISIONS),
                   help="bf16: bf16 weights; *-autocast: fp32 weights under autocast (official HPSv2 style)")
    p.add_argument("--n-images", type=int, default=256, help="images per measurement")
    p.add_argument("--image-size", type=int, default=512, help="side of the generated input images (SD output)")
    p.add_argument("--batch-sizes", default="1,8,32,64,128")
    p.add_argument("--modes", default="batched,loop,tensor")
    p.add_argument("--loop-images", type=int, default=64, help="images timed in the per-image loop")
    p.add_argument("--warmup", type=int, default=2)
    return p.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def build_scorer(args, workdir: Path):
    """Random weights -> HPSv2-layout checkpoint on disk -> load_scorer (the real loading path)."""
    import open_clip

    arch = TINY_OPEN_CLIP if args.arch == "tiny" else args.arch
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPEN_CLIP) if args.arch == "tiny" else open_clip.create_model(args.arch)
    path = workdir / "hps_random.pt"
    torch.save({"state_dict": {k: v.half() for k, v in model.state_dict().items()}}, path)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    dtype, autocast = PRECISIONS[args.precision]
    scorer = load_scorer("hpsv2", checkpoint=path, arch=arch, device=args.device, dtype=dtype,
                                 autocast=autocast)
    return scorer, n_params


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
              for _ in range(args.n_images)]
    prompts = [f"a photo of object number {i} on a table" for i in range(args.n_images)]
    common = {
        "bench": "scorer_throughput", "date": dt.date.today().isoformat(), "torch": torch.__version__,
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "arch": args.arch, "precision": args.precision, "image_size": args.image_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        scorer, n_params = build_scorer(args, Path(tmp))
    common["params_m"] = round(n_params / 1e6, 2)
    modes = args.modes.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    def report(mode: str, batch_size: int, n: int, seconds: float) -> None:
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        print(json.dumps({**common, "mode": mode, "batch_size": batch_size, "n_images": n,
                          "seconds": round(seconds, 4), "images_per_s": round(n / seconds, 2),
                          "peak_gib": None if peak is None else round(peak, 2)}), flush=True)

    if "loop" in modes:
        n = min(args.loop_images, len(images))
        for i in range(args.warmup):
            scorer.score([images[i]], prompts[i])
        seconds = _timed(lambda: [scorer.score([images[i]], prompts[i]) for i in range(n)], device)
        report("loop", 1, n, seconds)
    for batch_size in batch_sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if "batched" in modes:
            scorer.score(images[: batch_size * args.warmup], prompts[: batch_size * args.warmup], batch_size=batch_size)
            seconds = _timed(lambda bs=batch_size: scorer.score(images, prompts, batch_size=bs), device)
            report("batched", batch_size, len(images), seconds)
        if "tensor" in modes:
            pixels = torch.rand(batch_size, 3, args.image_size, args.image_size, device=device)
            batch_prompts = prompts[:batch_size]
            with torch.no_grad():
                for _ in range(args.warmup):
                    scorer.score_tensor(pixels, batch_prompts)
                steps = max(1, len(images) // batch_size)

                def run_tensor(px=pixels, bp=batch_prompts, k=steps):
                    for _ in range(k):
                        scorer.score_tensor(px, bp)

                seconds = _timed(run_tensor, device)
            report("tensor", batch_size, steps * batch_size, seconds)


if __name__ == "__main__":
    main()
