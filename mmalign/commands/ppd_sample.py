"""``mmalign ppd-sample <pipeline> <user_adapter> --user ID [--user-b ID --alpha A] --prompts P --out img.png``.

Sample a base pipeline with a trained PPD user adapter (``<run>/user_adapter``), conditioned on one training user's
embedding, or on the linear interpolation ``(1 - alpha) u_a + alpha u_b`` of two users. ``--user none`` samples the
base model (the adapter adds exactly nothing without a user).
"""

from __future__ import annotations

import argparse

from mmalign.commands._options import (
    add_device_argument,
    add_guidance_argument,
    add_out_argument,
    resolve_device,
)

NAME = "ppd-sample"
HELP = "Sample a pipeline with a PPD user adapter for one user or an interpolation of two users."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="the base diffusers pipeline (hub id or folder) the adapter was trained on")
    parser.add_argument("adapter", help="PPD user_adapter folder (with user_embeddings.safetensors)")
    parser.add_argument("--user", required=True, help="user id (as in the data's user_id column), or 'none'")
    parser.add_argument("--user-b", default=None, help="second user id for interpolation")
    parser.add_argument("--alpha", type=float, default=0.5, help="interpolation weight of --user-b")
    parser.add_argument("--scale", type=float, default=None, help="user-branch scale (default: the adapter's)")
    parser.add_argument("--prompts", "--prompt", dest="prompts", action="append", required=True,
                        help="prompt (repeatable)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    add_guidance_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_device_argument(parser)
    add_out_argument(parser, "output PNG (one image per prompt: name_<i>.png when several)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffusers import DiffusionPipeline

    from mmalign.diffusion.ppd import generate, interpolate_users, load_user_adapter, set_user_scale
    from mmalign.diffusion.ppd.export import load_user_embeddings

    device = resolve_device(args.device)
    if not Path(args.adapter).is_dir():
        raise FileNotFoundError(f"PPD user adapter folder not found: {args.adapter}")
    pipe = DiffusionPipeline.from_pretrained(args.pipeline).to(device)
    model = load_user_adapter(pipe.unet, args.adapter)
    if args.scale is not None:
        set_user_scale(pipe.unet, args.scale)
    users = load_user_embeddings(args.adapter)
    for user in filter(None, [args.user if args.user != "none" else None, args.user_b]):
        if user not in users:
            raise ValueError(f"user '{user}' not in {args.adapter} (users: {', '.join(sorted(users)[:20])})")
    u = None if args.user == "none" else users[args.user]
    if u is not None and args.user_b is not None:
        u = interpolate_users(u, users[args.user_b], args.alpha)
    images = generate(pipe, model, args.prompts, u, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                      seed=args.seed, output_type="pil")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
        print(f"wrote {path}")
    return 0
