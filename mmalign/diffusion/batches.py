"""From preference items to training batches: the cache-building pass, the two datasets and the collate.

Items come from :func:`mmalign.data.load_preference_data` in three kinds (team data contract):
``pairs`` (``prompt, chosen, rejected, chosen_key, rejected_key`` + optional ``prompt_chosen/prompt_rejected``),
``ranked`` (``prompt, images, image_keys, scores``) and ``unpaired`` (``prompt, image, image_key, label``). Each item
has ``k`` *members* (2, the list length, or 1), each an (image, key, prompt).

Every example handed to the collate is a dict of per-member tensors with leading dim ``k``; the collate stacks
them **member-major**: ``[member 0 of every item; member 1 of every item; ...]`` — for pairs the official
``[w; l]`` layout, so that ``chunk(2)`` splits winners and losers and a per-item ``t`` / noise is shared with
``repeat(k)``.

* cached (``data.cache=true``): :func:`build_cache` encodes every image and prompt once (first pass, progress
  bar, corrupt samples counted and skipped) and :class:`CachedDataset` reads latents' moments and text
  embeddings from disk;
* uncached: :class:`PixelDataset` yields pixels and prompts; the step encodes them (VAE, text encoders).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from mmalign.data.errors import BadSample
from mmalign.data.skipping import SkipCounter
from mmalign.diffusion.adapter import DiffusionParts, encode_pixels, encode_text, preprocess_image
from mmalign.diffusion.cache import LatentTextCache
from mmalign.diffusion.flips import draw_flips, flipped_key


def _is_bad(item: Any) -> bool:
    """A skipped item: the data readers return a ``BadSample`` (or ``None``) in place of an unreadable one."""
    return item is None or isinstance(item, BadSample)


def _fallback_key(image) -> str:
    return hashlib.sha1(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()


def item_members(item: dict[str, Any], kind: str) -> tuple[list[tuple[Any, str, str]], dict[str, Any]]:
    """``([(image, image_key, prompt), ...], extras)`` of one item; extras hold ``scores`` or ``label``."""
    if kind == "pairs":
        prompts = (item.get("prompt_chosen") or item["prompt"], item.get("prompt_rejected") or item["prompt"])
        images = (item["chosen"], item["rejected"])
        keys = (item.get("chosen_key"), item.get("rejected_key"))
        extras: dict[str, Any] = {}
    elif kind == "ranked":
        images, keys = tuple(item["images"]), tuple(item.get("image_keys") or [None] * len(item["images"]))
        prompts = (item["prompt"],) * len(images)
        extras = {"scores": torch.tensor([float(s) for s in item["scores"]])}
    elif kind == "unpaired":
        images, keys, prompts = (item["image"],), (item.get("image_key"),), (item["prompt"],)
        extras = {"label": torch.tensor(bool(item["label"]))}
    else:
        raise ValueError(f"unknown data kind '{kind}' (pairs, ranked, unpaired)")
    members = [(img, key or _fallback_key(img), p) for img, key, p in zip(images, keys, prompts)]
    return members, extras


def _light_entry(dataset: Any, index: int, kind: str, cache: LatentTextCache,
                 flips: bool = False) -> dict[str, Any] | BadSample | None:
    """The entry of an item whose images and prompts are all cached, read without decoding any image (content keys
    from the raw bytes, prompts from the record); ``None`` when something must be encoded or the dataset does not
    expose records (:class:`mmalign.data.PreferenceDataset` does)."""
    if not (hasattr(dataset, "image_keys") and hasattr(dataset, "records")):
        return None
    keys = dataset.image_keys(index)
    if isinstance(keys, BadSample):
        return keys
    record = dataset.records[index]
    if kind == "pairs":
        prompts = list(record.prompts) if record.prompts is not None else [record.prompt] * 2
        extras: dict[str, Any] = {}
    elif kind == "ranked":
        prompts, extras = [record.prompt] * len(keys), {"scores": torch.tensor([float(v) for v in record.scores])}
    else:
        prompts, extras = [record.prompt], {"label": torch.tensor(bool(record.label))}
    needed = [*keys, *(flipped_key(k) for k in keys)] if flips else list(keys)
    if not all(cache.has_image(k) for k in needed) or not all(cache.has_prompt(p) for p in prompts):
        return None
    return {"image_keys": list(keys), "prompts": prompts, **extras}


@torch.no_grad()
def build_cache(
    dataset: Dataset, kind: str, parts: DiffusionParts, cache: LatentTextCache, resolution: int,
    device: torch.device | str, batch_size: int = 8, max_bad_fraction: float = 0.05, num_workers: int = 0,
    progress: bool = True, flips: bool = False, counter: SkipCounter | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """First pass: encode what the cache lacks; return the light entries of the usable items and the stats.

    Items already fully cached are recognised from their content keys without decoding their images; the rest are
    decoded (DataLoader workers), encoded in batches and written. ``flips``: also encode every image flipped
    (stored under :func:`mmalign.diffusion.flips.flipped_key`) for ``data.random_flip``. Unreadable items are counted
    by ``counter`` (default: a :class:`~mmalign.data.skipping.SkipCounter` over the dataset with
    ``max_bad_fraction``), which stops the pass past its limit; ``stats["skips"]`` is its report.
    """
    counter = counter if counter is not None else SkipCounter(len(dataset), max_bad_fraction)
    entries: dict[int, dict[str, Any]] = {}
    bad: list[Any] = []

    def skip(item: Any) -> None:
        bad.append(item)
        if isinstance(item, BadSample):
            counter.add(item)
        else:
            counter.skip(f"item {len(bad)}", "unreadable item")
    to_decode: list[int] = []
    for index in tqdm(range(len(dataset)), desc="check cache", disable=not progress):
        light = _light_entry(dataset, index, kind, cache, flips)
        if light is None:
            to_decode.append(index)
        elif _is_bad(light):
            skip(light)
        else:
            entries[index] = light
    loader = DataLoader(Subset(dataset, to_decode), batch_size=batch_size, collate_fn=list, num_workers=num_workers)
    for n, chunk in enumerate(tqdm(loader, desc="cache latents/text", disable=not progress)):
        images, keys, prompts = [], [], []
        for index, item in zip(to_decode[n * batch_size : (n + 1) * batch_size], chunk):
            if _is_bad(item):
                skip(item)
                continue
            members, extras = item_members(item, kind)
            entries[index] = {"image_keys": [m[1] for m in members], "prompts": [m[2] for m in members], **extras}
            for image, key, prompt in members:
                for flip in (False, True) if flips else (False,):
                    stored = flipped_key(key) if flip else key
                    if not cache.has_image(stored) and stored not in keys:
                        images.append((image, flip))
                        keys.append(stored)
                if not cache.has_prompt(prompt) and prompt not in prompts:
                    prompts.append(prompt)
        _encode_into_cache(parts, cache, images, keys, prompts, resolution, device, batch_size)
    ordered = [entries[i] for i in sorted(entries)]
    n_members = sum(len(e["image_keys"]) for e in ordered)
    cache.stats["images_reused"] = n_members - cache.stats["images_encoded"]
    cache.stats["prompts_reused"] = len({p for e in ordered for p in e["prompts"]}) - cache.stats["prompts_encoded"]
    stats = {"items": len(ordered), "skipped": len(bad), "seen": len(dataset), "decoded": len(to_decode),
             **cache.stats, "skips": counter.as_dict()}
    return ordered, stats


def _encode_into_cache(parts, cache, images, keys, prompts, resolution, device, batch_size) -> None:
    for start in range(0, len(images), batch_size):
        pre = [preprocess_image(im, resolution, flip) for im, flip in images[start : start + batch_size]]
        pixels = torch.stack([p for p, _ in pre]).to(device)
        mean, std = encode_pixels(parts, pixels)
        for i, key in enumerate(keys[start : start + batch_size]):
            cache.put_image(key, mean[i], std[i], pre[i][1])
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        embeds = encode_text(parts, batch, device)
        for i, prompt in enumerate(batch):
            cache.put_prompt(prompt, {k: v[i] for k, v in embeds.items()})


class CachedDataset(Dataset):
    """Examples from the cache: ``latent_mean/latent_std/time_ids/prompt_embeds[/pooled]`` with leading dim k."""

    def __init__(self, entries: list[dict[str, Any]], cache: LatentTextCache, random_flip: bool = False,
                 flip_mode: str = "pair") -> None:
        """``random_flip``: read each image's flipped latents with p = 0.5 (``flip_mode``: per_image | pair; the
        cache must hold both orientations, ``build_cache(flips=True)``)."""
        self.entries, self.cache, self.random_flip, self.flip_mode = entries, cache, random_flip, flip_mode

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        flips = draw_flips(len(entry["image_keys"]), self.random_flip, self.flip_mode)
        lat = [self.cache.get_image(flipped_key(k) if f else k) for k, f in zip(entry["image_keys"], flips)]
        loaded = {p: self.cache.get_prompt(p) for p in dict.fromkeys(entry["prompts"])}  # a pair's prompt read once
        txt = [loaded[p] for p in entry["prompts"]]
        example = {
            "latent_mean": torch.stack([x["mean"] for x in lat]),
            "latent_std": torch.stack([x["std"] for x in lat]),
            "time_ids": torch.stack([x["time_ids"] for x in lat]),
            "prompt_embeds": torch.stack([x["prompt_embeds"] for x in txt]),
            "prompts": list(entry["prompts"]),
            "image_keys": list(entry["image_keys"]),
        }
        if "pooled" in txt[0]:
            example["pooled"] = torch.stack([x["pooled"] for x in txt])
        for extra in ("scores", "label"):
            if extra in entry:
                example[extra] = entry[extra]
        return example


class PixelDataset(Dataset):
    """Uncached examples: ``pixels/time_ids`` (leading dim k) and prompts; bad items pass through as ``None``."""

    def __init__(self, dataset: Dataset, kind: str, resolution: int, random_flip: bool = False, seed: int = 0,
                 flip_mode: str = "pair"):
        self.dataset, self.kind, self.resolution, self.random_flip, self.seed = dataset, kind, resolution, random_flip, seed
        self.flip_mode = flip_mode

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.dataset[index]
        if _is_bad(item):
            return None
        members, extras = item_members(item, self.kind)
        # flip_mode pair: one decision per item (identical geometry, spec §9); per_image: one per image (official)
        flips = draw_flips(len(members), self.random_flip, self.flip_mode)
        pre = [preprocess_image(image, self.resolution, f) for (image, _, _), f in zip(members, flips)]
        return {
            "pixels": torch.stack([p for p, _ in pre]),
            "time_ids": torch.stack([t for _, t in pre]),
            "prompts": [m[2] for m in members],
            "image_keys": [m[1] for m in members],
            "skipped": list(item.get("skipped", [])),
            **extras,
        }


def collate_members(examples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack examples member-major (see module docstring); ``None`` examples are dropped. Wrap with
    :func:`mmalign.data.collate_skipping` to carry the readers' skip records into ``batch["skipped"]``."""
    good = [e for e in examples if e is not None]
    batch: dict[str, Any] = {"groups": len(good)}
    if not good:
        return batch
    sizes = {len(e["prompts"]) for e in good}
    if len(sizes) != 1:
        raise ValueError(f"items in one batch have different numbers of images {sorted(sizes)}; use train.batch_size=1")
    k = sizes.pop()
    for name in ("latent_mean", "latent_std", "pixels", "time_ids", "prompt_embeds", "pooled"):
        if name in good[0]:
            stacked = torch.stack([e[name] for e in good])  # (B, k, ...)
            batch[name] = stacked.transpose(0, 1).reshape(k * len(good), *stacked.shape[2:])
    batch["prompts"] = [e["prompts"][m] for m in range(k) for e in good]
    if "image_keys" in good[0]:
        batch["image_keys"] = [e["image_keys"][m] for m in range(k) for e in good]
    if "scores" in good[0]:
        batch["scores"] = torch.stack([e["scores"] for e in good])
    if "label" in good[0]:
        batch["label"] = torch.stack([e["label"] for e in good])
    batch["group_size"] = k
    return batch
