"""``mmalign export <checkpoint> [--merge] --out <dir>``: export a training checkpoint or run folder.

Diffusion runs: without ``--merge`` the LoRA in diffusers format (``pytorch_lora_weights.safetensors`` with adapter
metadata); with ``--merge`` (or for full fine-tuning) a complete pipeline folder with the LoRA folded into the UNet.

VLM / video LLM runs (a peft adapter folder: a run's ``output_dir``): without
``--merge`` the adapter folder is copied; with ``--merge`` base + adapter are merged into a full transformers folder
(``--base`` overrides the base model recorded in the adapter config).

Every export also receives the run's ``mmalign_config.yaml`` (the resolved config it was trained with).
"""

from __future__ import annotations

import argparse

from mmalign.commands._options import add_out_argument

NAME = "export"
HELP = "Export a training checkpoint (or run folder) as a LoRA / adapter or a merged model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="<output_dir>/checkpoints/checkpoint-N, a run's output_dir, or an adapter")
    add_out_argument(parser, "folder to write")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA into the base and write a full model")
    parser.add_argument("--base", default=None, help="VLM adapters: base model folder or hub id (default: recorded)")


def run(args: argparse.Namespace) -> int:
    from mmalign.mllm.export import export_vlm, vlm_adapter_source

    if vlm_adapter_source(args.checkpoint) is not None:
        out = export_vlm(args.checkpoint, args.out, merge=args.merge, base=args.base)
    else:
        from mmalign.diffusion.export import export_checkpoint

        out = export_checkpoint(args.checkpoint, args.out, merge=args.merge)
    from mmalign.run_config import copy_run_config

    copy_run_config(args.checkpoint, args.out)  # the settings it was trained with travel with the export
    print(f"wrote {out}")
    return 0
