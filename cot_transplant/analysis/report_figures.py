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


def curves_figure(bands: Sequence[dict], runs: Sequence[tuple[str, object]], reference: dict | None) -> bytes:
    """Test f_c against samples trained: sweep combinations as mean and 95% t band across seeds
    (`bands`: {"label", "points" (sweep.json band entries), "base_rate"}), single runs with their
    per-eval bootstrap 95% band (`runs`: (label, run dir)), and the original study's published
    test f_c (`reference`, from `plots.read_reference`) as labelled grey lines.
    """
    fig = _figure(10, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    color_i = 0
    for band in bands:
        color = RUN_COLORS[color_i % len(RUN_COLORS)]
        color_i += 1
        pts = band["points"]
        x = np.array([p["samples"] for p in pts], dtype=np.float64)
        ax.plot(x, _nan(p["mean"] for p in pts), color=color, lw=1.8, marker="o", ms=3,
                label=f"{band['label']} (mean, 95% t band over seeds)")
        ax.fill_between(x, _nan(p["ci_low"] for p in pts), _nan(p["ci_high"] for p in pts), color=color,
                        alpha=0.2, lw=0)
        if band.get("base_rate") is not None:
            ax.axhline(band["base_rate"], color=color, **BASE_RATE_STYLE)
    for label, run_dir in runs:
        color = RUN_COLORS[color_i % len(RUN_COLORS)]
        color_i += 1
        run = load_run(run_dir)
        split = eval_split(run)
        evals = [r for r in run.evals if record_split(r) == split]
        if not evals:
            continue
        x, y = series(evals, f"{split}/f_c")
        ax.plot(x, y, color=color, lw=1.8, marker="o", ms=3, label=f"{label} ({split} f_c, 95% bootstrap band)")
        ax.fill_between(x, series(evals, f"{split}/f_c_ci_low")[1], series(evals, f"{split}/f_c_ci_high")[1],
                        color=color, alpha=0.2, lw=0)
        base = [v for v in series(evals, f"{split}/base_rate")[1] if not math.isnan(v)]
        if base:
            ax.axhline(base[-1], color=color, **BASE_RATE_STYLE)
    for i, (name, cols) in enumerate((reference or {}).items()):
        ax.plot(cols["samples_trained"], cols["f_c"], color=REFERENCE_COLORS[i % len(REFERENCE_COLORS)], lw=1.1,
                alpha=0.8, label=f"{REFERENCE_LABEL}: {name}")
    ax.plot([], [], color="0.3", label="argument base rate (dotted, per input)", **BASE_RATE_STYLE)
    ax.set_xlabel("samples trained")
    ax.set_ylabel("test f_c")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title("chooser accuracy on the test split")
    fig.tight_layout()
    return _png(fig)


def breakdown_figure(groupings: dict[str, list[tuple[str, list[tuple[str, float | None]]]]],
                     checker: float | None, base_rate: float | None) -> bytes:
    """One panel per grouping: f_c per group (bars, one colour per column), the last-step checker's
    overall accuracy dashed and the argument's accuracy dotted.

    `groupings`: {grouping: [(column label, [(group value, f_c)])]}.
    """
    names = [g for g, cols in groupings.items() if cols]
    fig = _figure(4.2 * max(1, len(names)), 4.0)
    for i, grouping in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        columns = groupings[grouping]
        values = list(dict.fromkeys(v for _, groups in columns for v, _ in groups))
        width = 0.8 / len(columns)
        for j, (label, groups) in enumerate(columns):
            f_c = dict(groups)
            x = np.arange(len(values)) + (j - (len(columns) - 1) / 2) * width
            ax.bar(x, _nan(f_c.get(v) for v in values), width, color=RUN_COLORS[j % len(RUN_COLORS)],
                   label=label if i == 0 else None)
        if checker is not None:
            ax.axhline(checker, color="black", ls="--", lw=1.2, label="last-step checker" if i == 0 else None)
        if base_rate is not None:
            ax.axhline(base_rate, color="0.3", label="argument accuracy" if i == 0 else None, **BASE_RATE_STYLE)
        ax.set_xticks(np.arange(len(values)))
        ax.set_xticklabels(values, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(grouping.replace("_", " "), fontsize=10)
        ax.grid(axis="y", alpha=0.25)
        if i == 0:
            ax.set_ylabel("test f_c")
    if names:
        fig.legend(loc="upper center", ncol=min(4, len(groupings[names[0]]) + 2), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    return _png(fig)
