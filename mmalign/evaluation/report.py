"""The report of ``mmalign evaluate``: PNG bar plots, base | aligned sample grids and ``report.html``.

Drawn with PIL only (no plotting dependency):

* ``plots/scores_<scorer>.png`` — base and aligned mean with their 95 % intervals (error bars);
* ``plots/win_rate.png`` — the win rate of aligned over base per scorer with its paired bootstrap interval and
  the 50 % line;
* ``plots/win_rate_by_category_<scorer>.png`` — the same per category (sets with categories);
* ``grids/samples.png`` — base | aligned pairs of images spread evenly over the set, labelled with the prompt and
  the first scorer's two scores; ``grids/largest_gains.png`` / ``grids/largest_losses.png`` — the pairs where that
  scorer moved most.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

BASE_COLOR = (140, 150, 170)
ALIGNED_COLOR = (40, 110, 200)
INK = (20, 20, 20)


def spread_indices(n: int, k: int) -> list[int]:
    """At most ``k`` indices spread evenly over ``range(n)`` (first and last included)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def bar_plot(path: Path, title: str, labels: list[str], series: list[tuple[str, tuple[int, int, int],
             list[float], list[tuple[float, float]]]], *, reference: float | None = None,
             value_range: tuple[float, float] | None = None) -> Path:
    """Horizontal bars: one row per label, one bar per series ``(name, color, values, (low, high) intervals)``."""
    bar_h, gap, left, right, top = 14, 10, 170, 70, 34
    width = 640
    rows = len(labels)
    height = top + rows * (len(series) * bar_h + gap) + 30
    lows = [lo for _, _, _, ci in series for lo, _ in ci] + [v for _, _, vals, _ in series for v in vals]
    highs = [hi for _, _, _, ci in series for _, hi in ci] + [v for _, _, vals, _ in series for v in vals]
    lo, hi = value_range or (min(0.0, min(lows)), max(highs))
    if reference is not None:
        lo, hi = min(lo, reference), max(hi, reference)
    hi = hi if hi > lo else lo + 1.0
    plot_w = width - left - right

    def x(v: float) -> int:
        return int(left + (v - lo) / (hi - lo) * plot_w)

    canvas = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(canvas)
    d.text((8, 6), title, fill=INK)
    for i, (name, color, _, _) in enumerate(series):  # legend
        d.rectangle([width - 200 + i * 95, 8, width - 190 + i * 95, 18], fill=color)
        d.text((width - 186 + i * 95, 7), name, fill=INK)
    y = top
    for r, label in enumerate(labels):
        d.text((8, y + 2), label[:26], fill=INK)
        for _name, color, values, cis in series:
            v, (clo, chi) = values[r], cis[r]
            origin = 0.0 if lo <= 0 else lo
            d.rectangle([x(min(origin, v)), y, x(max(origin, v)), y + bar_h - 3], fill=color)
            mid = y + (bar_h - 3) // 2
            d.line([x(clo), mid, x(chi), mid], fill=INK, width=1)
            d.line([x(clo), mid - 3, x(clo), mid + 3], fill=INK)
            d.line([x(chi), mid - 3, x(chi), mid + 3], fill=INK)
            d.text((x(max(v, chi)) + 4, y), _fmt(v), fill=INK)
            y += bar_h
        y += gap
    axis_y = y
    d.line([left, axis_y, left + plot_w, axis_y], fill=INK)
    for t in np.linspace(lo, hi, 5):
        d.line([x(t), axis_y, x(t), axis_y + 4], fill=INK)
        d.text((x(t) - 10, axis_y + 6), _fmt(float(t)), fill=INK)
    if reference is not None:
        d.line([x(reference), top - 4, x(reference), axis_y], fill=(200, 60, 60), width=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def pair_grid(path: Path, base: np.ndarray, aligned: np.ndarray, labels: list[str], *, columns: int = 4,
              cell: int = 160) -> Path:
    """A PNG of ``base | aligned`` pairs (uint8 ``(N, H, W, 3)``), each image resized to ``cell`` pixels high
    (nearest neighbour when enlarging, so small images stay crisp), a label of up to two lines under each pair."""
    n = len(base)
    if n == 0:
        raise ValueError("pair_grid: no images")
    h, w = base.shape[1], base.shape[2]
    ch, cw = cell, max(1, round(cell * w / h))
    label_h, gap = 26, 6
    pair_w = 2 * cw + 2
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (min(n, columns) * (pair_w + gap) + gap, 16 + rows * (ch + label_h + gap)), "white")
    d = ImageDraw.Draw(canvas)
    d.text((gap, 2), "each pair: base (left) | aligned (right), same prompt and seed", fill=INK)
    resample = Image.NEAREST if ch >= h else Image.BICUBIC
    chars = max(8, pair_w // 6)
    for i in range(n):
        r, c = divmod(i, columns)
        x0, y0 = gap + c * (pair_w + gap), 16 + r * (ch + label_h + gap)
        canvas.paste(Image.fromarray(base[i]).resize((cw, ch), resample), (x0, y0))
        canvas.paste(Image.fromarray(aligned[i]).resize((cw, ch), resample), (x0 + cw + 2, y0))
        for j, line in enumerate(labels[i].split("\n")[:2]):  # two lines: the prompt, then the scores
            d.text((x0, y0 + ch + 1 + 12 * j), line[:chars], fill=INK)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _grids(out: Path, scores: dict[str, dict[str, np.ndarray]], plan, grid_size: int) -> dict[str, str]:
    from mmalign.evaluation.generation import ImageStore

    first = next(iter(scores))
    b, a = scores[first]["base"], scores[first]["aligned"]
    diff = a - b
    order = np.argsort(diff, kind="stable")
    k = min(grid_size, len(plan))
    picks = {"samples": spread_indices(len(plan), grid_size),
             "largest_gains": [int(i) for i in order[::-1][: min(k, 8)]],
             "largest_losses": [int(i) for i in order[: min(k, 8)]]}
    stores = {w: ImageStore(out / "images" / w) for w in ("base", "aligned")}
    written = {}
    for name, idx in picks.items():
        labels = [f"{plan.prompt(i)} (seed {plan.seed(i)})\n{first}: {_fmt(b[i])} | {_fmt(a[i])}" for i in idx]
        written[name] = str(pair_grid(out / "grids" / f"{name}.png", stores["base"].load(idx),
                                      stores["aligned"].load(idx), labels).relative_to(out))
    return written


def _plots(out: Path, result: dict[str, Any]) -> dict[str, str]:
    rows = result["scorers"]
    written = {}
    for name, row in rows.items():
        written[f"scores_{name}"] = bar_plot(
            out / "plots" / f"scores_{name}.png", f"{name}: mean score (95% CI)", [name],
            [("base", BASE_COLOR, [row["base"]["mean"]], [tuple(row["base"]["ci95"])]),
             ("aligned", ALIGNED_COLOR, [row["aligned"]["mean"]], [tuple(row["aligned"]["ci95"])])])
        if "per_category" in row:
            cats = list(row["per_category"])
            written[f"win_rate_by_category_{name}"] = bar_plot(
                out / "plots" / f"win_rate_by_category_{name}.png",
                f"{name}: win rate of aligned over base per category (paired bootstrap 95% CI)", cats,
                [("aligned", ALIGNED_COLOR, [row["per_category"][c]["win_rate"] for c in cats],
                  [tuple(row["per_category"][c]["win_rate_ci95"]) for c in cats])],
                reference=0.5, value_range=(0.0, 1.0))
    names = list(rows)
    written["win_rate"] = bar_plot(
        out / "plots" / "win_rate.png", "win rate of aligned over base (ties count half; paired bootstrap 95% CI)",
        names, [("aligned", ALIGNED_COLOR, [rows[n]["win_rate"] for n in names],
                 [tuple(rows[n]["win_rate_ci95"]) for n in names])], reference=0.5, value_range=(0.0, 1.0))
    return {k: str(Path(v).relative_to(out)) for k, v in written.items()}


def _ci(row: dict[str, Any]) -> str:
    return f"{_fmt(row['mean'])} [{_fmt(row['ci95'][0])}, {_fmt(row['ci95'][1])}]"


def _table(rows: dict[str, dict[str, Any]], first: str) -> str:
    head = (f"<tr><th>{html.escape(first)}</th><th>n</th><th>base mean [95% CI]</th><th>aligned mean [95% CI]</th>"
            "<th>gain [95% CI]</th><th>win rate [bootstrap 95% CI]</th><th>W / T / L</th></tr>")
    body = []
    for key, r in rows.items():
        lo, hi = r["win_rate_ci95"]
        body.append(f"<tr><td>{html.escape(str(key))}</td><td>{r['base']['n']}</td><td>{_ci(r['base'])}</td>"
                    f"<td>{_ci(r['aligned'])}</td><td>{_ci(r['gain'])}</td>"
                    f"<td>{100 * r['win_rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]</td>"
                    f"<td>{r['wins']} / {r['ties']} / {r['losses']}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def write_report(out: Path, result: dict[str, Any], scores: dict[str, dict[str, np.ndarray]], plan, prompts,
                 grid_size: int = 24) -> dict[str, Any]:
    """Plots, grids and ``report.html`` in ``out``; returns their paths (relative to ``out``)."""
    plots = _plots(out, result)
    grids = _grids(out, scores, plan, grid_size)
    rows = result["scorers"]
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mmalign evaluate</title><style>"
        "body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0 20px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #eee;margin:4px 0}</style></head><body>",
        "<h1>Base vs aligned</h1>",
        f"<p>aligned: <code>{e(result['aligned'])}</code> ({e(result['aligned_kind'])})<br>base: "
        f"<code>{e(result['base'])}</code><br>prompts: <code>{e(result['prompts'])}</code>, "
        f"{result['num_prompts']} prompts x {len(result['seeds'])} seeds = {result['num_images']} images per model "
        f"(seeds {e(str(result['seeds']))}, {result['num_inference_steps']} steps, guidance "
        f"{result['guidance_scale']})</p>",
        "<p>Win rate: share of (prompt, seed) images where the aligned model scores higher than the base, ties "
        "counting half; its interval is a paired bootstrap over prompts. Score intervals: mean ± 1.96 standard "
        "errors over per-prompt means.</p>",
        "<h2>Scores</h2>", _table(rows, "scorer"), f"<img src='{plots['win_rate']}'>",
        *[f"<img src='{plots[f'scores_{n}']}'>" for n in rows],
    ]
    for n, r in rows.items():
        if "per_category" in r:
            parts += [f"<h2>{e(n)} per category</h2>", _table(r["per_category"], "category"),
                      f"<img src='{plots[f'win_rate_by_category_{n}']}'>"]
    first = next(iter(rows))
    parts += ["<h2>Samples</h2>", f"<p>Spread over the set; labels: prompt (seed) and {e(first)} base | aligned.</p>",
              f"<img src='{grids['samples']}'>", f"<h3>Largest gains ({e(first)})</h3>",
              f"<img src='{grids['largest_gains']}'>", f"<h3>Largest losses ({e(first)})</h3>",
              f"<img src='{grids['largest_losses']}'>",
              "<p>Every number is in <code>eval.json</code>, every image's scores in <code>scores.jsonl</code>.</p>",
              "</body></html>"]
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")
    return {"html": "report.html", "plots": plots, "grids": grids}
