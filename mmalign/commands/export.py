"""``mmalign export <checkpoint> [--merge] --out <dir>``: export a diffusion training checkpoint or run folder.

Without ``--merge``: the LoRA in diffusers format (``pytorch_lora_weights.safetensors`` with adapter metadata).
With ``--merge`` (or for full fine-tuning): a complete pipeline folder with the LoRA folded into the UNet weights.
"""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "Export a diffusion training checkpoint (or run folder) as a LoRA file or a merged pipeline."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="<output_dir>/checkpoints/checkpoint-N, or a run's output_dir")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA into the UNet and write a full pipeline")


def run(args: argparse.Namespace) -> int:
    from mmalign.diffusion.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, merge=args.merge)
    print(f"wrote {out}")
    return 0
