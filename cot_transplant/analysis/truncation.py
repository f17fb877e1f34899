"""Truncation study: evaluate a trained run, without retraining, transplanting only the first
fraction of each argument's states (the original study's proposed next step: is the answer's
correctness readable only from the last states, or built up over the argument?).

Two ways to treat the argument's tail, the tokens past the cut (`tail`):
  text    the chooser reads the tail through its own states, as `transplant.fraction` does in
          training and `cot-transplant eval --fraction` does; the chooser then sees the whole
          candidate text, so at small fractions it can check the final step itself.
  hidden  the tail is removed from the chooser's attention mask (positions renumbered as if the
          tokens were deleted): the chooser sees only the transplanted first fraction. The last
          argument token, which the transplant never covers under the one-token shift, stays.
At fraction 1.0 both equal the plain evaluation exactly.

The fractions run longest first: with the arguer state cache on (`train.arguer_cache_gib` > 0), the
arguer runs once per row and the shorter fractions read the first tokens of its stored states (equal
to recomputing them up to float rounding; `train.steps.fast.state_cache`). truncation.json records the cache's
counts (`arguer_cache`).

Outputs in the run directory: `truncation.json`, `truncation.png`, and per fraction
`truncation/<split>-<checkpoint>-<tail>-f<fraction>.csv` (row_id,p_cand1,p_cand2,label,argument_choice).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cot_transplant.errors import UserError

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
TAILS = ("text", "hidden")


def parse_fractions(text: str) -> list[float]:
    """`"0.25,0.5,1"` -> [0.25, 0.5, 1.0]; each in (0, 1], no repeats (UserError otherwise)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--fractions '{text}': expected numbers such as 0.25,0.5,0.75,1.0") from None
    if not values or any(not 0 < v <= 1 for v in values) or len(set(values)) < len(values):
        raise UserError(f"--fractions '{text}': give distinct numbers in (0, 1], e.g. 0.25,0.5,0.75,1.0")
    return values


def predict_hidden_tail(session, split: str, fraction: float) -> dict[str, list]:
    """`train.evaluate.predict` with the tail past the cut hidden from the chooser (see module docstring)."""
    from cot_transplant.train.evaluate import predict

    return predict(session, split, fraction=fraction, hide_tail=True)


def _write_predictions(path: Path, pred: dict[str, list]) -> None:
    from cot_transplant.runs.rundir import write_prediction_rows

    write_prediction_rows(path, zip(pred["row_id"], pred["p_cand1"], pred["p_cand2"], pred["label"],
                                    pred["argument_choice"]))


def truncation(run: Path, fractions=FRACTIONS, split: str = "test", checkpoint: int | None = None,
               tail: str = "text") -> dict:
    """Evaluate `run` at `checkpoint` (default: the latest) for each fraction; write the outputs, return the JSON.

    Per fraction: f_c with its 95% Wilson interval, AUROC, n, f_c_oc/f_c_oi, base rate and loss.
    Raises UserError for a text-only run (nothing is transplanted), an unknown split or
    checkpoint, or a bad fraction or tail.
    """
    from cot_transplant.provenance import stamp
    from cot_transplant.runs import rundir
    from cot_transplant.train.checkpoint import load_checkpoint
    from cot_transplant.train.evaluate import metrics_of, predict
    from cot_transplant.train.setup import setup

    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found; give a directory under runs/")
    if tail not in TAILS:
        raise UserError(f"--tail '{tail}': must be one of {', '.join(TAILS)}")
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise UserError(f"fractions {fractions}: each must be in (0, 1]")
    cfg, _ = rundir.read_run_config(run)
    if cfg.variant == "text-only":
        raise UserError(f"{run}: a text-only run transplants nothing; truncation has no effect on it")
    ckpt = rundir.find_checkpoint(run, checkpoint)
    session = setup(cfg)
    if not session.examples.get(split):
        raise UserError(f"{run}: split '{split}' has no rows; choose one of "
                        f"{[s for s, ex in session.examples.items() if ex]}")
    state = load_checkpoint(ckpt, session.model, restore_rng=False)
    rows = {}
    # Longest spans first: the arguer state cache then serves every shorter fraction's states as prefixes.
    for f in sorted(set(fractions), reverse=True):
        pred = predict(session, split, fraction=f) if tail == "text" else predict_hidden_tail(session, split, f)
        m = metrics_of(pred)
        name = f"{split}-{ckpt.name}-{tail}-f{f:g}.csv"
        _write_predictions(run / "truncation" / name, pred)
        rows[f] = {"fraction": f, **{k: m.get(k) for k in ("f_c", "f_c_ci_low", "f_c_ci_high", "auroc", "n",
                                                            "f_c_oc", "f_c_oi", "base_rate", "loss")},
                   "predictions": f"truncation/{name}"}
    cache = session.arguer_cache
    result = {"run": str(run), "variant": cfg.variant, "split": split, "checkpoint": ckpt.name,
              "samples": state["cursor"]["samples"], "tail": tail, "trained_fraction": cfg.transplant.fraction,
              "fractions": [rows[f] for f in dict.fromkeys(fractions)],
              "arguer_cache": None if cache is None else dataclasses.asdict(cache.stats), "_provenance": stamp()}
    rundir.atomic_write_text(run / "truncation.json", json.dumps(result, indent=1))
    try:
        plot_truncation(result, run / "truncation.png")
    except Exception as exc:  # a figure must never cost the numbers
        result["figure"] = f"not written: {exc}"
    return result


def plot_truncation(result: dict, out_png: Path) -> Path:
    """f_c with its 95% CI and AUROC against the transplanted fraction; the base rate dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["fractions"]
    x = [r["fraction"] for r in rows]
    f_c = [r["f_c"] for r in rows]
    err = [[r["f_c"] - r["f_c_ci_low"] for r in rows], [r["f_c_ci_high"] - r["f_c"] for r in rows]]
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(x, f_c, yerr=err, marker="o", capsize=4, color="tab:blue", label="f_c (95% Wilson CI)")
    ax.plot(x, [r["auroc"] if r["auroc"] is not None else float("nan") for r in rows], marker="s",
            color="tab:orange", ls="--", label="AUROC")
    base = rows[0]["base_rate"]
    if base is not None:
        ax.axhline(base, color="0.3", ls=(0, (1, 3)), lw=1.6, label="argument base rate")
    ax.set_xlabel("fraction of each argument's states transplanted")
    ax.set_ylabel(f"{result['split']} split")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=9, frameon=False)
    ax.set_title(f"{Path(result['run']).name} ({result['variant']}), {result['checkpoint']}, tail {result['tail']}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png


def format_truncation(result: dict) -> str:
    """The terminal lines of `truncation`'s result: one per fraction, then the arguer state cache's counts."""
    lines = [f"{result['run']} ({result['variant']}), {result['checkpoint']} ({result['samples']} samples), "
             f"{result['split']} split, tail {result['tail']}:"]
    for r in result["fractions"]:
        ci = f"[{100 * r['f_c_ci_low']:.1f}%, {100 * r['f_c_ci_high']:.1f}%]"
        auroc = "n/a" if r["auroc"] is None else f"{r['auroc']:.3f}"
        lines.append(f"   fraction {r['fraction']:g}: f_c {100 * r['f_c']:.1f}% {ci}  AUROC {auroc}  n {r['n']}")
    if result.get("arguer_cache"):
        from cot_transplant.train.steps.fast.state_cache import CacheStats

        lines.append(f"   {CacheStats(**result['arguer_cache']).line()}")
    return "\n".join(lines)
