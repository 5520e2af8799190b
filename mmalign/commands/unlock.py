"""``mmalign unlock <output_dir>``: take over a run folder whose lock another host recorded (or a killed run left).

A run refuses a folder whose ``.mmalign.lock`` names another host (:mod:`mmalign.run_lock`): from here there is no
telling whether that run still writes to it. Once you know it does not, this command clears the record; it refuses,
as a run would, while a process holds the folder's lock.
"""

from __future__ import annotations

import argparse
import json

NAME = "unlock"
HELP = "Clear the run-folder lock that another host (or a killed run) recorded, once that run is known to be over."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="the run's output_dir (holds .mmalign.lock)")
    parser.add_argument("--dry-run", action="store_true", help="only show the record (default: clear it)")


def run(args: argparse.Namespace) -> int:
    from mmalign.run_lock import unlock_run_folder

    previous = unlock_run_folder(args.output_dir, clear=not args.dry_run)
    print(json.dumps({"output_dir": args.output_dir, "cleared" if not args.dry_run else "recorded": previous or None}))
    return 0
