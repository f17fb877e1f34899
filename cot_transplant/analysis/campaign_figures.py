"""The campaign's two figures, one question per panel, from the committed run outputs.

`curves_figure`: test `f_c` against training samples (log axis), one panel per condition: each variant's
mean over seeds with its seeds' range as a band, chance, the argument's base rate where the prompt shows
the argument, and the original study's published test `f_c`. `positive_figure`: the positive-control
series, `joint`'s test `f_c` against the share of rows planted, beside `text-only` and what reading every
planted verdict would give. Drawn on a bare `Figure` with the Agg canvas (no pyplot state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cot_transplant.analysis import campaign
from cot_transplant.analysis.plots import read_reference

COLORS = {"joint": "tab:blue", "frozen-arguer": "tab:green", "text-only": "tab:orange"}
CONDITIONS = (("noarg", "original CSV, no argument (primary)", False),
              ("gsm8k", "GSM8K model pairs, no argument", False),
              ("arg", "original CSV with its argument", True))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def variant_curve(runs: dict[int, campaign.Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(samples, mean, low, high) of test f_c over the seeds' evaluations (low/high: the seeds' range)."""
    by_n: dict[int, list[float]] = {}
    for run in runs.values():
        for n, pred in campaign.test_curve(run).items():
            by_n.setdefault(n, []).append(float(pred["score"].mean()))
    xs = sorted(by_n)
    return (np.array(xs, float), np.array([np.mean(by_n[x]) for x in xs]), np.array([min(by_n[x]) for x in xs]),
            np.array([max(by_n[x]) for x in xs]))


def base_rate(runs: dict[str, dict[int, campaign.Run]]) -> float | None:
    """The argument's own pick on the test rows (from any run's chosen predictions)."""
    for variant in runs.values():
        for run in variant.values():
            if run.chosen:
                pred = run.chosen["pred"]
                return float(np.mean(pred["argument_choice"] == pred["label"]))
    return None


def curves_figure(root: Path, out: Path, reference_csv: Path | None = None) -> Path | None:
    """docs/results-curves.png; None when no condition has a finished run."""
    studies = [(name, title, arg, campaign.load_study(root, name)) for name, title, arg in CONDITIONS]
    studies = [s for s in studies if s[3]]
    if not studies:
        return None
    reference = None
    if reference_csv is not None and Path(reference_csv).is_file():
        reference = read_reference(reference_csv).get("unmasked")
    fig = _figure(5.2 * len(studies), 4.2)
    for i, (name, title, arg, study) in enumerate(studies):
        ax = fig.add_subplot(1, len(studies), i + 1)
        for variant in campaign.VARIANTS:
            if variant not in study:
                continue
            x, mean, low, high = variant_curve(study[variant])
            n = len(study[variant])
            ax.plot(x, mean, "-o", color=COLORS[variant], lw=2, ms=4, label=f"{variant} ({n} seed{'s' * (n != 1)})")
            ax.fill_between(x, low, high, color=COLORS[variant], alpha=0.18, lw=0)
        ax.axhline(0.5, color="0.4", ls=":", lw=1.2, label="chance")
        rate = base_rate(study) if arg else None
        if rate is not None:
            ax.axhline(rate, color="tab:red", ls="--", lw=1.2, label=f"argument's pick ({rate:.0%})")
        if reference is not None:
            ax.plot(reference["samples_trained"], reference["f_c"], color="0.55", lw=1, alpha=0.8,
                    label="original study, LLaMA-7B with argument (published)")
        ax.set_xscale("log")
        _finish(ax, "training samples (log)", title)
    return _save(fig, out)


def positive_figure(root: Path, out: Path) -> Path | None:
    """docs/results-positive.png; None before the first planted pair is finished."""
    levels = [r for r in campaign.positive_levels(root) if r["fraction"] is not None]
    if not levels:
        return None
    fig = _figure(5.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    levels.sort(key=lambda r: r["fraction"])
    x = np.array([100 * r["fraction"] for r in levels])
    joint = np.array([r["a"] for r in levels])
    text = np.array([r["b"] for r in levels])
    low = np.array([r["b"] + r["ci_low"] for r in levels])
    high = np.minimum(1.0, np.array([r["b"] + r["ci_high"] for r in levels]))
    ax.errorbar(x, joint, yerr=[joint - low, high - joint], fmt="-o", color=COLORS["joint"], capsize=3,
                label="joint (95% CI of its gain over text-only)")
    ax.plot(x, text, "s", color=COLORS["text-only"], label="text-only (same input at every share)")
    every = np.array([100 * f for _, f in campaign.LEVELS])[::-1]
    base = float(np.mean(text))
    ax.plot(every, base + every / 100 * (1 - base), ":", color="0.4", label="if every planted verdict were read")
    for r, xi, yi in zip(levels, x, joint):
        ax.annotate("detected" if r["detected"] else "not detected", (xi, yi), textcoords="offset points",
                    xytext=(-8, -16), ha="right", fontsize=7)
    for xi in sorted(set(every) - set(x)):
        ax.annotate("not run yet", (xi, 0.32), ha="center", fontsize=7, color="0.4")
    ax.set_xscale("log")
    ax.set_xlim(7, 140)
    ax.set_xticks(every, [f"{v:g}%" for v in every])
    ax.minorticks_off()
    _finish(ax, "share of rows whose verdict only the arguer reads (log)",
            "positive control at the main runs' settings")
    return _save(fig, out)


def _finish(ax, xlabel: str, title: str) -> None:
    """The axes every panel shares: test f_c from 0.3 to 1, a light grid, a small legend."""
    ax.set_ylim(0.3, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test f_c")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
