"""Subcommands of the ``mmalign`` CLI, one module each.

Each module defines ``NAME`` (the subcommand, e.g. ``"export"``), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. :mod:`mmalign.cli` discovers them, so adding a
subcommand never edits a shared file. Heavy imports belong inside ``run`` to keep ``--help`` fast.
"""
