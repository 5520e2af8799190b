"""Preference dataset readers for text-to-image training (Pick-a-Pic parquet, ``datasets`` folders, hub ids,
jsonl + image files; pairs, dual captions, ranked lists, unpaired labels) with validation and counted skips.

Entry point: :func:`load_preference_data`; item contracts in :mod:`mmalign.data.dataset`, schemas in
:mod:`mmalign.data.records`, skip counting in :mod:`mmalign.data.skipping`.
"""

from mmalign.data.dataset import PreferenceDataset, ScanReport, load_preference_data
from mmalign.data.errors import BadSample, DataFormatError, TooManyBadSamplesError
from mmalign.data.images import DEFAULT_MIN_IMAGE_SIZE, decode_image, image_key, to_rgb
from mmalign.data.skipping import SkipCounter, collate_skipping
from mmalign.data.writers import (
    write_pairs_jsonl,
    write_parquet_rows,
    write_pickapic_parquet,
    write_ranked_jsonl,
    write_unpaired_jsonl,
)

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
