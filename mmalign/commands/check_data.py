"""``mmalign check-data <path> [--kind pairs|ranked|unpaired] [--split S]``: validate a preference data set.

Loads ``<path>`` with :func:`mmalign.data.load_preference_data` (structural problems fail here with file, row
and field), then decodes every image once (``--no-scan`` skips that) and prints one JSON object: what loading
kept and dropped (ties, unlabelled, empty prompts, ...), which files it read (``merged_files``: a folder merges every
parquet of the selected split), how many items have unusable images, and where the first ``--show`` of them are. Exit status 0 when the data is usable, 1 when unusable images exceed
``--max-bad-fraction``, 2 on a structural error.
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "check-data"
HELP = "Validate preference data (Pick-a-Pic parquet, datasets folder, jsonl/csv + images) and count bad samples."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="parquet folder/file, datasets.save_to_disk folder, .jsonl/.csv file, or hub id")
    parser.add_argument("--kind", default="pairs", choices=["pairs", "ranked", "unpaired"])
    parser.add_argument("--split", default=None, help="split (default: train when the data has splits)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01, help="tolerated fraction of bad items")
    parser.add_argument("--min-image-size", type=int, default=None, help="smallest accepted image side (px)")
    parser.add_argument("--no-scan", action="store_true", help="only validate the tables, do not decode images")
    parser.add_argument("--show", type=int, default=10, help="how many bad items to list")


def run(args: argparse.Namespace) -> int:
    from mmalign.data import DEFAULT_MIN_IMAGE_SIZE, TooManyBadSamplesError, load_preference_data

    dataset = load_preference_data(
        args.path, args.kind, split=args.split, max_bad_fraction=args.max_bad_fraction,
        min_image_size=args.min_image_size or DEFAULT_MIN_IMAGE_SIZE,
    )
    result = dataset.summary()
    result["merged_files"] = list(dataset.stats.files)
    status = 0
    if not args.no_scan:
        report = dataset.scan()
        result.update(report.as_dict())
        result["bad"] = [b.describe() for b in report.bad[: args.show]]
        try:
            report.check(args.max_bad_fraction)
        except TooManyBadSamplesError as exc:
            result["error"] = str(exc)
            status = 1
    print(json.dumps(result, indent=2))
    files = dataset.stats.files
    print(f"mmalign check-data: {result['items']} items from {len(files)} file(s): {', '.join(files)}"
          , file=sys.stderr)
    return status
