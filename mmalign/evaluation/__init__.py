"""Base vs aligned evaluation of text-to-image models: one path for ``mmalign evaluate`` and the toy ``toy_eval``.

* :mod:`.prompts` — prompt sets (shipped PartiPrompts and toy captions, ``.txt`` / ``.jsonl`` / ``.tsv`` files, an
  HPDv2 benchmark folder) with categories;
* :mod:`.generation` — one image per (prompt, seed) through :func:`mmalign.diffusion.sampling.generate`, each with
  its own generator (``image_seed``), optionally saved to / resumed from a folder of PNGs;
* :mod:`.scoring` — scorers by name (every :func:`scorers.load_scorer` name, plus ``toy-judge``) and their scores;
* :mod:`.stats` — mean and 95 % interval, win rate with ties, the paired bootstrap interval;
* :mod:`.report` — ``eval.json``, bar plots, base | aligned grids and ``report.html``.
"""
