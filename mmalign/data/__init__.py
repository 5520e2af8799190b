"""Preference dataset readers for text-to-image training, with validation and counted skips.

Quick reference (details: :mod:`mmalign.data.dataset` items, :mod:`mmalign.data.records` schemas,
:mod:`mmalign.data.images` RGB conversion, :mod:`mmalign.data.skipping` skip counting)::

    ds = load_preference_data(path, kind="pairs" | "ranked" | "unpaired", *, split=None, max_bad_fraction=0.01,
                              min_image_size=16, bad_image="replace" | "drop", prompt_column=None,
                              caption_columns=None, honour_has_label=True, honour_are_different=True,
                              dreamlike_pairs_only=False, empty_prompt="skip" | "error", max_items=None,
                              extra_columns=())

``path``: folder of parquet shards (Pick-a-Pic layout ``<split>-*.parquet``), one parquet, a
``datasets.save_to_disk`` folder, a ``.jsonl`` / ``.csv`` file with image paths relative to it, or a hub id.

=========  ==========================================================  ==========================================
kind       columns / jsonl fields                                      item
=========  ==========================================================  ==========================================
pairs      ``caption, jpg_0, jpg_1, label_0`` (Pick-a-Pic v2; ties       ``id, prompt, chosen, rejected,
           dropped, ``has_label``/``are_different`` honoured,          chosen_key, rejected_key`` (+
           ``caption_0/1`` = dual captions) or ``prompt, chosen,       ``prompt_chosen, prompt_rejected`` when
           rejected`` (+ ``prompt_chosen, prompt_rejected``)           dual)
ranked     ``prompt, images, scores`` (higher score = better)          ``id, prompt, images, image_keys, scores``
                                                                       sorted best first
unpaired   ``prompt, image, label`` (or csv ``file_path, caption,      ``id, prompt, image, image_key, label``
           label``; or any pairs data: two items per pair)             (``label`` True = desirable)
=========  ==========================================================  ==========================================

Images are RGB ``PIL.Image`` (RGBA composited on white, 16-bit rescaled); keys are sha1 of the encoded bytes.
Every item also carries ``"skipped"``: the :class:`BadSample` records of unreadable items it replaced.
Structural problems raise :class:`DataFormatError` naming file, row and field; unreadable images are counted
skips (:func:`collate_skipping` + :class:`SkipCounter`, or :meth:`PreferenceDataset.scan`); load counts are in
``ds.summary()``. ``mmalign check-data <path>`` runs all checks from the command line.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "PreferenceDataset": "dataset", "ScanReport": "dataset", "load_preference_data": "dataset",
    "BadSample": "errors", "DataFormatError": "errors", "TooManyBadSamplesError": "errors",
    "DEFAULT_MIN_IMAGE_SIZE": "images", "decode_image": "images", "image_key": "images", "to_rgb": "images",
    "SkipCounter": "skipping", "collate_skipping": "skipping",
    "write_pairs_jsonl": "writers", "write_parquet_rows": "writers", "write_pickapic_parquet": "writers",
    "write_ranked_jsonl": "writers", "write_unpaired_jsonl": "writers",
}
"""Names of the package face and their modules, imported on first use: the light modules of this package (video
sampling options, row readers) load without torch for the config schemas."""


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'mmalign.data' has no attribute {name!r}")
    return getattr(import_module(f"mmalign.data.{_HOMES[name]}"), name)


__all__ = [
    "DEFAULT_MIN_IMAGE_SIZE",
    "BadSample",
    "DataFormatError",
    "PreferenceDataset",
    "ScanReport",
    "SkipCounter",
    "TooManyBadSamplesError",
    "collate_skipping",
    "decode_image",
    "image_key",
    "load_preference_data",
    "to_rgb",
    "write_pairs_jsonl",
    "write_parquet_rows",
    "write_pickapic_parquet",
    "write_ranked_jsonl",
    "write_unpaired_jsonl",
]
