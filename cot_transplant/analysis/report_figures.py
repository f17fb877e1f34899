"""The report's own figures, drawn from result files alone and returned as PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

from cot_transplant.analysis.plots import (BASE_RATE_STYLE, REFERENCE_COLORS, REFERENCE_LABEL, RUN_COLORS,
                                           eval_split, load_run, record_split, series)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _draw_ours(ax, bands: Sequence[dict], runs: Sequence[tuple[str, object]]) -> None:
    for i, band in enumerate(bands):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        pts = band["points"]
        x = np.array([p["samples"] for p in pts], dtype=np.float64)
        ax.plot(x, _nan(p["mean"] for p in pts), color=color, lw=1.8, marker="o", ms=3,
                label=f"{band['label']} (mean; 95% t band over 3+ seeds, else their range)")
        ax.fill_between(x, _nan(p["ci_low"] for p in pts), _nan(p["ci_high"] for p in pts), color=color,
                        alpha=0.2, lw=0)
        if band.get("base_rate") is not None:
            ax.axhline(band["base_rate"], color=color, **BASE_RATE_STYLE)
    for i, (label, run_dir) in enumerate(runs, start=len(bands)):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        run = load_run(run_dir)
        split = eval_split(run)
        evals = [r for r in run.evals if record_split(r) == split]
        if not evals:
            continue
        x, y = series(evals, f"{split}/f_c")
        ax.plot(x, y, color=color, lw=1.8, marker="o", ms=3, label=f"{label} ({split} f_c, 95% Wilson band)")
        ax.fill_between(x, series(evals, f"{split}/f_c_ci_low")[1], series(evals, f"{split}/f_c_ci_high")[1],
                        color=color, alpha=0.2, lw=0)
        base = [v for v in series(evals, f"{split}/base_rate")[1] if not math.isnan(v)]
        if base:
            ax.axhline(base[-1], color=color, **BASE_RATE_STYLE)


def _finish(ax, title: str) -> None:
    ax.plot([], [], color="0.3", label="argument base rate (dotted)", **BASE_RATE_STYLE)
    ax.set_xlabel("samples trained")
    ax.set_ylabel("test f_c")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.set_title(title, fontsize=10)


def curves_figure(bands: Sequence[dict], runs: Sequence[tuple[str, object]], reference: dict | None) -> bytes:
    """Test f_c against samples trained: sweep combinations as mean and 95% t band across seeds
    (`bands`: {"label", "points" (sweep.json band entries), "base_rate"}) and single runs with their
    per-eval Wilson 95% band (`runs`: (label, run dir)). With `reference` (from
    `plots.read_reference`), a second panel adds the original study's published test f_c, labelled,
    on its own longer axis (short runs would vanish at its scale).
    """
    fig = _figure(13 if reference else 8, 5.2)
    ax = fig.add_subplot(1, 2 if reference else 1, 1)
    _draw_ours(ax, bands, runs)
    _finish(ax, "this report: test f_c")
    if reference:
        ax = fig.add_subplot(1, 2, 2)
        _draw_ours(ax, bands, runs)
        for i, (name, cols) in enumerate(reference.items()):
            ax.plot(cols["samples_trained"], cols["f_c"], color=REFERENCE_COLORS[i % len(REFERENCE_COLORS)],
                    lw=1.1, alpha=0.8, label=f"{REFERENCE_LABEL}: {name}")
        _finish(ax, "with the original study's published test f_c (7B LLaMA)")
    fig.tight_layout()
    return _png(fig)


def breakdown_figure(groupings: dict[str, dict], checker: float | None, base_rate: float | None) -> bytes:
    """One panel per grouping: f_c per group (bars, one colour per column), the last-step checker's
    accuracy per group (black ticks) and over all rows (dashed), the argument's accuracy (dotted).

    `groupings`: {grouping: {"values": [group value], "checker": [its checker f_c or None],
    "columns": [(column label, [f_c per value or None])]}}.
    """
    names = list(groupings)
    ncols = min(3, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = _figure(4.6 * ncols, 3.4 * nrows + 0.6)
    for i, grouping in enumerate(names):
        g = groupings[grouping]
        ax = fig.add_subplot(nrows, ncols, i + 1)
        x0 = np.arange(len(g["values"]))
        width = 0.8 / max(1, len(g["columns"]))
        for j, (label, f_c) in enumerate(g["columns"]):
            ax.bar(x0 + (j - (len(g["columns"]) - 1) / 2) * width, _nan(f_c), width,
                   color=RUN_COLORS[j % len(RUN_COLORS)], label=label if i == 0 else None)
        ax.scatter(x0, _nan(g["checker"]), marker="_", s=900, color="black", lw=2,
                   label="last-step checker, per group" if i == 0 else None, zorder=3)
        if checker is not None:
            ax.axhline(checker, color="black", ls="--", lw=1.0, label="last-step checker, all rows" if i == 0 else None)
        if base_rate is not None:
            ax.axhline(base_rate, color="0.3", label="argument accuracy, all rows" if i == 0 else None,
                       **BASE_RATE_STYLE)
        ax.set_xticks(x0)
        ax.set_xticklabels(g["values"], rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(grouping.replace("_", " "), fontsize=10)
        ax.grid(axis="y", alpha=0.25)
        ax.set_ylabel("test f_c", fontsize=8)
    if names:
        fig.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / (3.4 * nrows + 0.6)))
    return _png(fig)
