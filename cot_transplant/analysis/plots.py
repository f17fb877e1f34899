"""Figures made from run directories alone: the original two-panel curves, and CI bands for sweeps.

A run directory holds `metrics.jsonl` (one JSON object per line: `kind` "train" or
"eval", `samples`, metric keys such as `train/f_c` or `val/f_c`) and optionally
`config.yaml`, whose `run.name` and `variant` name the run in legends.
Figures are drawn on a bare `Figure` with the Agg canvas, never through pyplot, so
no global state or display is involved.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from cot_transplant.errors import UserError

CURVE_METRICS = ("f_c", "f_c_oc", "f_c_oi", "o_c", "o_i")  # right axis, 0..1
STYLES: dict[str, dict[str, Any]] = {  # one line style per metric; colour is the run's
    "loss": dict(ls="-", lw=2.6, alpha=0.35),
    "f_c": dict(ls="-", lw=1.8),
    "f_c_oc": dict(ls="--", lw=1.2),
    "f_c_oi": dict(ls=(0, (5, 1.5, 1, 1.5)), lw=1.2),
    "o_c": dict(ls=(0, (1, 1)), lw=1.2),
    "o_i": dict(ls=(0, (6, 1.5, 1, 1.5, 1, 1.5)), lw=1.0),
}
BASE_RATE_STYLE = dict(ls=(0, (1, 3)), lw=1.6)
REFERENCE_LABEL = "original study (batch-averaged test curves)"
# The seed's conditionals (f_c_oc, ...) are means over 64-row test batches and swing
# 0..1 between passes: overlaid by default they bury the runs' curves.
REFERENCE_METRICS = ("loss", "f_c")
REFERENCE_COLUMNS = ("run", "samples_trained", "loss") + CURVE_METRICS
REFERENCE_COLORS = ("black", "0.6", "0.3", "0.8")
RUN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
              "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


class Run(NamedTuple):
    """One run directory's records, split by kind."""

    label: str
    path: Path
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl file, blank lines skipped.

    An unfinished last line (no trailing newline: the run is still writing it) is
    skipped; any other line that is not a JSON object with a numeric `samples`
    (for kind train/eval) raises UserError naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give a run directory that holds metrics.jsonl") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); check the file") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: a line still being written
                continue
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or delete that line") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}; "
                            "fix or delete that line")
        if record.get("kind") in ("train", "eval"):
            samples = record.get("samples")
            if isinstance(samples, bool) or not isinstance(samples, (int, float)):
                raise UserError(f"{path}:{number}: {record['kind']} record has no numeric 'samples'; "
                                "fix or delete that line")
        records.append(record)
    return records


def run_label(run_dir: Path) -> str:
    """`run.name (variant)` from config.yaml when present, else the directory name."""
    run_dir = Path(run_dir)
    try:
        import yaml

        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except Exception:  # config.yaml is optional for plots: any problem falls back to the name
        config = None
    if not isinstance(config, dict):
        return run_dir.resolve().name
    run = config.get("run")
    name = run.get("name") if isinstance(run, dict) else None
    variant = config.get("variant")
    if isinstance(variant, dict):
        variant = variant.get("name")
    name = str(name) if name else run_dir.resolve().name
    # default run names are "<config>-<variant>-<time>": do not say the variant twice
    if not variant or re.search(rf"(^|[-_]){re.escape(str(variant))}($|[-_])", name):
        return name
    return f"{name} ({variant})"


def load_run(run_dir: Path) -> Run:
    """Read a run directory; raises UserError when it or its metrics.jsonl is missing or malformed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory; give a run directory (it holds metrics.jsonl)")
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl; is this a run directory? (train writes it)")
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        raise UserError(f"{run_dir / 'metrics.jsonl'}: no train or eval records yet; "
                        "plot again once the run has logged")
    return Run(run_label(run_dir), run_dir, train, evals)


def record_split(record: Mapping[str, Any]) -> str | None:
    """An eval record's split: its `split` field, else the prefix of its metric keys."""
    if record.get("split"):
        return str(record["split"])
    for key in record:
        if key.startswith(("test/", "val/")):
            return key.split("/", 1)[0]
    return None


def eval_split(run: Run) -> str | None:
    """The split the curves show: "test" when the run has test evals, else "val", else None."""
    splits = {record_split(r) for r in run.evals}
    return "test" if "test" in splits else "val" if "val" in splits else None


def series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(samples, values) of `key`, sorted by samples; missing, None or non-numeric values are NaN."""
    ordered = sorted(records, key=lambda r: r["samples"])  # stable: equal counts keep log order
    x = np.array([r["samples"] for r in ordered], dtype=np.float64)
    y = np.array([_number(r.get(key)) for r in ordered], dtype=np.float64)
    return x, y


def _number(value: Any) -> float:
    """A logged value as a float; None (and anything not a number) is NaN, a gap in the line."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def rolling_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean over the last `k` points (fewer at the start), ignoring NaN.

    A window with no finite value gives NaN. k <= 1 returns the values unchanged.
    """
    values = np.asarray(values, dtype=np.float64)
    if k <= 1 or values.size == 0:
        return values.copy()
    finite = ~np.isnan(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    hi = np.arange(1, values.size + 1)
    lo = np.maximum(0, hi - k)
    window_sum, window_n = sums[hi] - sums[lo], counts[hi] - counts[lo]
    return np.divide(window_sum, window_n, out=np.full(values.size, np.nan), where=window_n > 0)


def read_reference(csv_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Curves per run from a CSV laid out like seed-data/seed_test_curves.csv.

    Returns {run: {column: values}} sorted by `samples_trained`; empty cells are NaN.
    Raises UserError when the file is missing or lacks a needed column.
    """
    csv_path = Path(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise UserError(f"{csv_path}: reference CSV lacks column(s) {', '.join(missing)}; "
                                f"use the layout of seed-data/seed_test_curves.csv")
            rows = list(reader)
    except FileNotFoundError:
        raise UserError(f"{csv_path}: no such file; "
                        "give --reference a CSV like seed-data/seed_test_curves.csv") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{csv_path}: cannot read the reference CSV ({exc}); check the file") from None
    by_run: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    out = {}
    for name, run_rows in by_run.items():
        try:
            columns = {c: np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in run_rows])
                       for c in REFERENCE_COLUMNS[1:]}
        except ValueError as exc:
            raise UserError(f"{csv_path}: run {name!r} has a non-numeric value ({exc}); fix the file") from None
        order = np.argsort(columns["samples_trained"], kind="stable")
        out[name] = {c: v[order] for c, v in columns.items()}
    return out


def _draw(ax_loss, ax_rate, x: np.ndarray, ys: Mapping[str, np.ndarray], color: str, scale: float = 1.0,
          alpha: float | None = None) -> None:
    """Loss on the left axis, the 0..1 metrics on the right axis, in one colour."""
    for metric, y in ys.items():
        style = dict(STYLES[metric])
        style["lw"] = style["lw"] * scale
        if alpha is not None:
            style["alpha"] = alpha
        ax = ax_loss if metric == "loss" else ax_rate
        ax.plot(x, y, color=color, **style)


def _panel_axes(fig, position: int, title: str):
    ax_loss = fig.add_subplot(1, 2, position)
    ax_rate = ax_loss.twinx()
    ax_loss.set_title(title)
    ax_loss.set_xlabel("samples trained")
    ax_loss.set_ylabel("loss")
    ax_rate.set_ylabel("f_c, f_c_oc, f_c_oi, o_c, o_i")
    ax_rate.set_ylim(-0.02, 1.02)
    ax_loss.grid(alpha=0.25)
    return ax_loss, ax_rate


def clip_reference(reference: Mapping[str, Mapping[str, np.ndarray]], max_samples: int | None):
    """The reference curves' points at or below `max_samples` samples trained (all of them for None)."""
    if max_samples is None:
        return dict(reference)
    return {name: {c: v[cols["samples_trained"] <= max_samples] for c, v in cols.items()}
            for name, cols in reference.items()}


def plot_curves(run_dirs: Sequence[Path], out_png: Path, smooth: int = 1, reference_csv: Path | None = None,
                title: str | None = None, reference_metrics: Sequence[str] = REFERENCE_METRICS,
                max_samples: int | None = None) -> Path:
    """Write the two-panel curves figure for one or more runs; return its path.

    Left: train stats; right: eval stats on the test split when a run has one, else
    on val; both against samples trained. Loss on the left y-axis, the 0..1 metrics
    on a right y-axis; a colour per run, a line style per metric. `smooth` > 1 is a
    trailing mean over that many points on the train curves (eval points are whole
    split passes and are drawn as logged). The argument's base rate, when logged, is
    a dotted line on the eval panel. `reference_csv` overlays the original study's
    test curves (see `read_reference`), `reference_metrics` of them (loss and f_c by
    default). `max_samples` limits both panels (and the reference) to that many samples
    trained, so short runs stay visible beside a long reference. Raises UserError on
    unreadable inputs.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    runs = [load_run(d) for d in run_dirs]
    reference = clip_reference(read_reference(reference_csv) if reference_csv is not None else {}, max_samples)
    splits = sorted({s for s in map(eval_split, runs) if s})

    fig = Figure(figsize=(14, 6.2))
    FigureCanvasAgg(fig)
    smooth_note = f", mean of {smooth} points" if smooth > 1 else ""
    train_axes = _panel_axes(fig, 1, f"train (per sub-batch{smooth_note})")
    eval_axes = _panel_axes(fig, 2, f"eval ({'/'.join(splits) or 'none logged'} split)")
    run_handles = []
    for i, run in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        split = eval_split(run)
        label = f"{run.label} [{split}]" if len(splits) > 1 and split else run.label  # which split is whose
        run_handles.append(Line2D([], [], color=color, lw=3, label=label))
        if run.train:
            x, _ = series(run.train, "train/loss")
            ys = {m: rolling_mean(series(run.train, f"train/{m}")[1], smooth) for m in ("loss",) + CURVE_METRICS}
            _draw(*train_axes, x, ys, color)
        evals = [r for r in run.evals if record_split(r) == split]
        if evals:
            x, _ = series(evals, f"{split}/loss")
            _draw(*eval_axes, x, {m: series(evals, f"{split}/{m}")[1] for m in ("loss",) + CURVE_METRICS}, color)
            base = [v for v in series(evals, f"{split}/base_rate")[1] if not math.isnan(v)]
            if base:  # constant per split; the last logged value is the current one
                eval_axes[1].axhline(base[-1], color=color, **BASE_RATE_STYLE)
    for i, (name, cols) in enumerate(reference.items()):
        color = REFERENCE_COLORS[i % len(REFERENCE_COLORS)]
        run_handles.append(Line2D([], [], color=color, lw=3, label=f"{REFERENCE_LABEL}: {name}"))
        _draw(*eval_axes, cols["samples_trained"], {m: cols[m] for m in reference_metrics}, color, scale=0.8,
              alpha=0.75)  # the translucent loss style would turn black into the grey of the second run
    for ax_loss, _ in (train_axes, eval_axes):
        if max_samples is not None:
            ax_loss.set_xlim(0, max_samples)
        if not ax_loss.lines:
            ax_loss.text(0.5, 0.5, "no records", transform=ax_loss.transAxes, ha="center", color="0.5")

    style_handles = [Line2D([], [], color="0.3", **STYLES["loss"], label="loss (left axis)")]
    style_handles += [Line2D([], [], color="0.3", **STYLES[m], label=m) for m in CURVE_METRICS]
    style_handles.append(Line2D([], [], color="0.3", **BASE_RATE_STYLE, label="argument base rate"))
    # Line styles (metrics) in one row under the title; colours (runs) below the panels.
    fig.legend(handles=style_handles, loc="upper center", bbox_to_anchor=(0.5, 0.945), frameon=False,
               ncol=len(style_handles), fontsize=9, handlelength=3)
    run_columns = min(2, len(run_handles))
    fig.legend(handles=run_handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), frameon=False,
               ncol=run_columns, fontsize=9)
    fig.suptitle(title or "cot-transplant: " + ", ".join(r.label for r in runs))
    legend_rows = math.ceil(len(run_handles) / run_columns)
    fig.subplots_adjust(left=0.05, right=0.95, top=0.86, bottom=0.11 + 0.032 * legend_rows, wspace=0.28)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def plot_ci_band(curves_by_label: Mapping[str, Iterable[Iterable[tuple[float, float | None]]]], out_png: Path, *,
                 ylabel: str = "val/f_c", title: str | None = None, base_rate: float | None = None,
                 alpha: float = 0.05, bounds: tuple[float, float] | None = None) -> Path:
    """One mean line with its band per label (e.g. a sweep combination); return the path.

    `curves_by_label` maps a label to its runs' (samples, value) series; the band is `stats.ci_band`: the (1 - alpha) t interval where 3+ runs
    have a point (clipped to `bounds`, e.g. `stats.FRACTION` for f_c), the runs' min-max
    where fewer do. `base_rate`, when given, is drawn as a dotted line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cot_transplant.analysis.stats import ci_band

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, curves) in enumerate(curves_by_label.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        band = ci_band(list(curves), alpha=alpha, bounds=bounds)
        runs = int(band.n.max()) if band.n.size else 0
        ax.plot(band.samples, band.mean, color=color, lw=1.6, label=f"{label} (n={runs})")
        ax.fill_between(band.samples, band.low, band.high, color=color, alpha=0.2, lw=0)
    if base_rate is not None:
        ax.axhline(base_rate, color="0.3", label="argument base rate", **BASE_RATE_STYLE)
    ax.set_xlabel("samples trained")
    ax.set_ylabel(f"{ylabel} (mean; {100 * (1 - alpha):.0f}% t band over 3+ runs, else min-max)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=9, frameon=False)
    ax.set_title(title or ylabel)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png
