"""What ``recipes/diffusion.py`` calls for ``method.name=ppd``: per-user data and embeddings, the training set, the
user-conditioned UNet, the export.

1. the one data set of the recipe (its registry entry's ``columns`` add ``user_id``; images stay lazy);
2. :func:`~mmalign.diffusion.ppd.data.split_shots`: N shots per user (embedding) vs training pairs (no leakage);
3. :func:`~mmalign.diffusion.ppd.users.embed_users`: VLM or CLIP embeddings, cached under ``method.ppd.cache_dir``;
4. one diffusion training set per user (:func:`mmalign.diffusion.build.training_set`: latent/text cache shared on
   disk), each example carrying its user's embedding, concatenated (users mixed by the loader's shuffle);
5. the frozen UNet (the shared frozen dtype and placement, :func:`~mmalign.diffusion.build.place_frozen_parts`, and
   speed options) with the user branch (:class:`UserConditionedUNet`); the
   reference is the same UNet without the user branch, so no reference copy is built.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Subset

from mmalign.diffusion.adapter import DiffusionParts
from mmalign.diffusion.build import place_frozen_parts, speed_options, training_set
from mmalign.diffusion.ppd.data import WithUser, collate_with_users, split_shots
from mmalign.diffusion.ppd.export import USER_EMBEDDINGS_NAME, save_user_adapter, save_user_embeddings
from mmalign.diffusion.ppd.model import UserConditionedUNet
from mmalign.diffusion.ppd.users import embed_users
from mmalign.diffusion.reference import ReferenceProvider


def user_training_set(cfg, dataset, parts: DiffusionParts, accelerator) -> tuple[Any, Any, Any, dict[str, Any], dict]:
    """``(train_set, collate_fn, skip_counter, stats, embeddings)`` for PPD (steps 2-4 of the module docstring) on
    ``dataset``, the recipe's data set (read once, with ``user_id``)."""
    ppd = cfg.method.ppd
    splits, split_stats = split_shots(dataset, ppd.shots, ppd.seed)
    if not splits:
        raise ValueError(f"{cfg.data.path}: no user has more than method.ppd.shots={ppd.shots} pairs")
    cache_dir = ppd.cache_dir or str(Path(cfg.output_dir) / "user_embeddings")
    embeddings, embed_stats = embed_users(ppd, dataset, splits, cache_dir, accelerator.device)
    parts_sets, collate_fn, data_stats = [], None, {}
    for user, (_, train_idx) in splits.items():
        user_set, collate_fn, _, stats_u = training_set(cfg, "pairs", Subset(dataset, train_idx), parts, accelerator)
        for key in ("items", "skipped", "seen"):
            if key in stats_u:
                data_stats[key] = data_stats.get(key, 0) + stats_u[key]
        parts_sets.append(WithUser(user_set, embeddings[user]))
    if accelerator.is_main_process:
        save_user_embeddings(embeddings, Path(cfg.output_dir) / USER_EMBEDDINGS_NAME)
    stats = {**data_stats, **split_stats, **embed_stats, "user_embeddings_dir": cache_dir}
    counter = None
    if not cfg.data.cache:  # uncached: one skip counter over all users' training pairs (bad images read in the step)
        from mmalign.diffusion.build import skip_counter

        counter = skip_counter(cfg, split_stats["train_pairs"])
    return ConcatDataset(parts_sets), collate_with_users(collate_fn), counter, stats, embeddings


def prepare_user_unet(cfg, parts: DiffusionParts, accelerator, user_shape: tuple[int, int]):
    """``(model, reference, applied)``: frozen base UNet in the compute dtype with a float32 user branch."""
    ppd = cfg.method.ppd
    device = accelerator.device
    unet = parts.unet.to(device, place_frozen_parts(cfg, parts, device)).requires_grad_(False)
    applied = speed_options(cfg, unet, device)  # before the user branch: switching the backend replaces processors
    model = UserConditionedUNet.build(unet, user_shape, ppd.num_tokens, ppd.init, ppd.scale, ppd.seed)
    model.to(device)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    applied.update(mode="ppd_user_adapter", reference="base_without_user_branch", trainable_params=trainable,
                   user_tokens=model.projection.num_tokens)
    return model, ReferenceProvider("none"), applied


def export_user_adapter(model: UserConditionedUNet, cfg, output_dir: str | Path) -> Path:
    """``<output_dir>/user_adapter``: the adapter (safetensors + json, embedding source recorded) and the training
    users' embeddings (``user_embeddings.safetensors``, ``user_<id>`` keys)."""
    ppd = cfg.method.ppd
    source = {"embedding": ppd.embedding, "vlm": ppd.vlm, "scorer": ppd.scorer,
              "scorer_checkpoint": ppd.scorer_checkpoint, "shots": ppd.shots, "base_model": cfg.model.pretrained}
    out = save_user_adapter(model, Path(output_dir) / "user_adapter", extra=source)
    users = Path(output_dir) / USER_EMBEDDINGS_NAME
    if users.exists():
        shutil.copyfile(users, out / USER_EMBEDDINGS_NAME)
    return out


def ppd_training_set(cfg, kind: str, dataset, parts: DiffusionParts, accelerator) -> tuple[Any, Any, Any, dict]:
    """The registry's ``training_set`` hook: per-user training sets of the recipe's ``dataset``."""
    train_set, collate_fn, counter, stats, _ = user_training_set(cfg, dataset, parts, accelerator)
    return train_set, collate_fn, counter, stats


def ppd_setup_model(cfg, parts: DiffusionParts, accelerator, data_stats: dict):
    """The registry's ``setup_model`` hook: the user-conditioned UNet for the embeddings' shape."""
    return prepare_user_unet(cfg, parts, accelerator, tuple(data_stats["embedding_shape"]))


def ppd_export(model: UserConditionedUNet, cfg, parts: DiffusionParts, output_dir: str | Path) -> Path:
    """The registry's ``export`` hook: :func:`export_user_adapter`."""
    return export_user_adapter(model, cfg, output_dir)
