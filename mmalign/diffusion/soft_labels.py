"""SmPO soft labels: reward-model scores of both images of every pair, computed once per data set and stored.

Official SmPO (`` preprocessing.py``, spec §3) scores ``jpg_0``/``jpg_1`` of Pick-a-Pic offline with PickScore's
**raw cosine** (unit-norm text and image embeddings, no logit scale) and hard-codes the global min/max of that
cosine on Pick-a-Pic v2 for the normalisation. Here:

* any scorer of the :mod:`scorers` API scores the pairs (``scorer.score(images, prompts, raw=True)``: the cosine for
  cosine heads, the head output for the aesthetic MLP);
* ``reward_min`` / ``reward_max`` are the min and max over **all scored images of the data set** (spec pitfall 3:
  the official constants are data- and scorer-specific), stored with the scores; ``method.smpo.reward_range``
  chooses them (``data``, the default) or a named official range (:data:`REWARD_RANGES`:
  ``pickapic_v2_pickscore``, hard-coded in ``JaydenLyh/SmPO`` @ 8922d54 ``train.py`` l.741-742);
* the file (JSON, ``format: mmalign.smpo_soft_labels/1``) holds, per pair ``"<chosen_key>|<rejected_key>"``, the raw
  rewards ``[r_chosen, r_rejected]`` in the data set's (human) order; the training step orders and weights pairs
  (:mod:`mmalign.diffusion.smpo`). Its default location is keyed by a fingerprint of the data (image keys and
  prompts) and the scorer (name, checkpoint, card options), so a second run on the same data reuses it.

``scorer: tiny:<card>`` scores with a tiny random-weight checkpoint of that card written under the output folder
(smoke tests / demos; the scores are meaningless), as ``model.pretrained: tiny:sd15`` does for the pipeline: the
recipe resolves it into ``scorer`` / ``scorer_checkpoint`` / ``scorer_options`` before this module sees it
(:func:`mmalign.testing.placeholders.resolve_placeholders`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmalign.diffusion.options import SmpoConfig

FORMAT = "mmalign.smpo_soft_labels/1"
REWARD_RANGES: dict[str, tuple[float, float]] = {
    "pickapic_v2_pickscore": (0.11543526500463486, 0.28201571106910706),
}
"""Named official ``(min, max)`` reward ranges. ``pickapic_v2_pickscore``: PickScore's raw cosine on Pick-a-Pic v2
(SmPO ``train.py`` l.741-742 ``max_val`` / ``min_val``)."""


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def data_fingerprint(dataset, cfg: SmpoConfig) -> str:
    """sha256 over the scorer identity and every pair's (chosen key, rejected key, prompt), read without decoding."""
    h = hashlib.sha256(json.dumps([cfg.scorer, cfg.scorer_checkpoint, cfg.scorer_options], sort_keys=True,
                                  default=str).encode())
    for i in range(len(dataset)):
        keys = dataset.image_keys(i)
        if isinstance(keys, list):
            h.update(("|".join(keys) + "\n" + str(dataset.records[i].prompt) + "\n").encode())
    return h.hexdigest()[:16]


def default_labels_path(dataset, cfg: SmpoConfig, cache_root: str | os.PathLike | None) -> Path:
    from mmalign.diffusion.cache import default_cache_root

    root = Path(cache_root) if cache_root else default_cache_root()
    return root / "smpo_labels" / f"{_safe(cfg.scorer)}-{data_fingerprint(dataset, cfg)}.json"


def load_label_scorer(cfg: SmpoConfig, device: str | torch.device = "cpu"):
    """The scorer of ``cfg`` through :func:`scorers.load_scorer` (``tiny:<card>`` is resolved by the recipe)."""
    import scorers

    if cfg.scorer.startswith("tiny:"):
        raise ValueError(f"method.smpo.scorer={cfg.scorer}: a tiny: placeholder is resolved first "
                         "(mmalign.testing.placeholders.resolve_placeholders: the recipes and `mmalign smpo-labels`)")
    return scorers.load_scorer(cfg.scorer, checkpoint=cfg.scorer_checkpoint, device=device, **cfg.scorer_options)


@torch.no_grad()
def score_pairs(dataset, scorer, batch_size: int = 32, progress: bool = True) -> tuple[dict[str, list[float]], int]:
    """``({"<chosen_key>|<rejected_key>": [r_chosen, r_rejected]}, skipped)`` — raw rewards of every readable pair
    (dual-caption pairs are scored against their own captions)."""
    from mmalign.data import BadSample

    pairs: dict[str, list[float]] = {}
    skipped = 0
    buffer: list[dict[str, Any]] = []

    def flush() -> None:
        images = [im for it in buffer for im in (it["chosen"], it["rejected"])]
        prompts = [p for it in buffer for p in (it.get("prompt_chosen") or it["prompt"],
                                                 it.get("prompt_rejected") or it["prompt"])]
        raw = scorer.score(images, prompts, raw=True, batch_size=batch_size).double().view(-1, 2)
        for it, (r_c, r_r) in zip(buffer, raw.tolist()):
            pairs[f"{it['chosen_key']}|{it['rejected_key']}"] = [r_c, r_r]
        buffer.clear()

    for i in tqdm(range(len(dataset)), desc="SmPO soft labels", disable=not progress):
        item = dataset.read(i) if hasattr(dataset, "read") else dataset[i]
        if item is None or isinstance(item, BadSample):
            skipped += 1
            continue
        buffer.append(item)
        if 2 * len(buffer) >= batch_size:
            flush()
    if buffer:
        flush()
    return pairs, skipped


def write_soft_labels(path: str | os.PathLike, pairs: dict[str, list[float]], *, scorer: str,
                      source: str, skipped: int = 0) -> dict[str, Any]:
    """Write the soft-label file atomically; min/max over all scored images; returns the written dict."""
    if not pairs:
        raise ValueError(f"no readable pair to score in {source}")
    values = [r for pair in pairs.values() for r in pair]
    disagree = sum(1 for r_c, r_r in pairs.values() if r_r > r_c)
    doc = {"format": FORMAT, "scorer": scorer, "source": source, "reward": "raw", "reward_min": min(values),
           "reward_max": max(values), "num_pairs": len(pairs), "skipped": skipped,
           "scorer_disagrees_with_label": disagree, "pairs": pairs}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    return doc


@dataclass
class SoftLabels:
    """A loaded soft-label file: raw rewards per pair and the data set's min/max."""

    pairs: dict[str, list[float]]
    reward_min: float
    reward_max: float
    path: str

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoftLabels:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: not an SmPO soft-label file (format {doc.get('format')!r}, expected {FORMAT})")
        return cls(doc["pairs"], float(doc["reward_min"]), float(doc["reward_max"]), str(path))

    def reward_range(self, name: str = "data") -> tuple[float, float]:
        """``(min, max)`` of the normalisation: the data set's (``data``) or a named official range."""
        if name == "data":
            return self.reward_min, self.reward_max
        if name not in REWARD_RANGES:
            raise ValueError(f"config key 'method.smpo.reward_range': '{name}' (data, {', '.join(REWARD_RANGES)})")
        return REWARD_RANGES[name]

    def rewards(self, chosen_keys: list[str], rejected_keys: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw rewards ``(r_chosen [B], r_rejected [B])`` (float64) of the pairs in the data set's order."""
        out = []
        for c, r in zip(chosen_keys, rejected_keys):
            value = self.pairs.get(f"{c}|{r}")
            if value is None:
                raise KeyError(f"{self.path}: no soft label for the pair chosen={c} rejected={r}; the file was made "
                               "for other data — delete it (or set method.smpo.labels) to recompute")
            out.append(value)
        t = torch.tensor(out, dtype=torch.float64).view(-1, 2)
        return t[:, 0], t[:, 1]


def prepare_soft_labels(cfg, dataset, accelerator=None, device: str | torch.device | None = None) -> Path:
    """Recipe hook (and ``mmalign smpo-labels``): make sure the soft labels of ``dataset`` exist (scored on the main
    process on first use) and set ``cfg.method.smpo.labels`` to the file. ``cfg`` is the diffusion recipe config."""
    smpo = cfg.method.smpo
    path = Path(smpo.labels) if smpo.labels else default_labels_path(dataset, smpo, cfg.data.cache_dir)
    is_main = accelerator is None or accelerator.is_main_process
    if is_main and not path.is_file():
        device = device or (accelerator.device if accelerator is not None else "cpu")
        scorer = load_label_scorer(smpo, device)
        pairs, skipped = score_pairs(dataset, scorer, smpo.batch_size, progress=cfg.train.progress_bar)
        write_soft_labels(path, pairs, scorer=smpo.scorer, source=str(cfg.data.path), skipped=skipped)
        del scorer
    if accelerator is not None:
        accelerator.wait_for_everyone()
    smpo.labels = str(path)
    return path
