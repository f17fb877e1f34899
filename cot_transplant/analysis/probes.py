"""Linear probes: is "this argument is correct" linearly readable from the arguer's own states?

The base model (no adapters) reads each row's two candidate arguments after the arguer prompt
(`prompts.templates`, tokenized with `train.batches.encode_template`, so the argument span is
exact). Per layer, three feature sets, each one vector per candidate:
  hidden_mean   the residual stream averaged over the argument's tokens
  hidden_last   the residual stream at the argument's last token (it has read the whole argument)
  kv_mean       that layer's k_proj and v_proj outputs (before RoPE, the transplant's site),
                averaged over the argument's tokens, concatenated
Layer l is `hidden_states[l]` of a transformers forward: 0 the embeddings, l the output of decoder
layer l (the last after the model's final norm); K/V of decoder layer l are plotted at l, the stream
they are computed from. Spans are unshifted: the states at the argument's own tokens.

A standardized L2 logistic regression per (feature set, layer) predicts correct (1) vs incorrect
(0), cross-validated with GroupKFold on the question, so a question's two answers always sit in one
fold and a probe cannot score by recognising the question. The same probes on shuffled labels give
the chance level as measured, not assumed. Two baselines on the same items and folds
(`analysis.probe_baselines`) say what the argument's length alone and its words alone give.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cot_transplant.analysis.probe_cv import cv_auroc, group_folds, shuffle_within
from cot_transplant.errors import UserError

KINDS = ("hidden_mean", "hidden_last", "kv_mean")
BASELINE_COLORS = {"length_only": "tab:purple", "tfidf": "tab:red"}
KIND_LABELS = {"hidden_mean": "hidden state, mean over the argument",
               "hidden_last": "hidden state at the argument's last token",
               "kv_mean": "K/V (k_proj, v_proj), mean over the argument"}


# --- cross-validated probes (`probe_cv`) -----------------------------------------------------------------


def probe_layers(features: dict[str, np.ndarray], labels, groups, folds: int | list = 5, C: float = 1.0,
                 seed: int = 0, control: bool = True, progress: bool = False) -> dict[str, list[dict]]:
    """`cv_auroc` for every feature set and layer, all on one set of folds; `features[kind]` is (layers, n, d).

    `folds` is a count or `group_folds`' pairs. With `control`, each layer also gets `auroc_shuffled`:
    the same probe on labels shuffled once within each group (seeded, the same for every layer), the
    measured chance level.
    """
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    folds = group_folds(groups, folds) if isinstance(folds, (int, np.integer)) else folds
    shuffled = shuffle_within(labels, groups, seed)
    out = {}
    bar = tqdm(total=sum(len(v) for v in features.values()), desc="probe fits", unit="layer",
               disable=None if progress else True, dynamic_ncols=True)
    for kind, per_layer in features.items():
        rows = []
        for layer, x in enumerate(per_layer):
            row = {"layer": layer, **cv_auroc(x, labels, groups, folds, C)}
            if control:
                row["auroc_shuffled"] = cv_auroc(x, shuffled, groups, folds, C)["auroc"]
            rows.append(row)
            bar.update(1)
        out[kind] = rows
    bar.close()
    return out


# --- features from the arguer -----------------------------------------------------------------------


def candidate_items(records) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Each row's correct and incorrect argument as (question, argument), with labels (1/0) and groups (row)."""
    items, labels, groups = [], [], []
    for i, rec in enumerate(records):
        for argument, label in ((rec.correct_argument, 1), (rec.incorrect_argument, 0)):
            items.append((rec.question, argument))
            labels.append(label)
            groups.append(i)
    return items, np.array(labels), np.array(groups)


def extract_features(model, tokenizer, template, items: list[tuple[str, str]], batch_size: int = 8,
                     device=None, max_tokens: int | None = None, progress: bool = False
                     ) -> tuple[dict[str, np.ndarray], list[int]]:
    """Run the plain model over the arguer prompt of each (question, argument); return its features.

    Returns:
        ({kind: (layers, n_kept, d) float32}, indices of the kept items). Items whose prompt is
        longer than `max_tokens` or whose argument has no tokens are left out.
    """
    import torch
    from tqdm.auto import tqdm

    from cot_transplant.prompts.segments import pad_batch, position_ids
    from cot_transplant.train.batches import encode_template
    from cot_transplant.transplant import capture_kv

    encoded, kept = [], []
    for i, (question, argument) in enumerate(items):
        try:
            enc = encode_template(tokenizer, template.arguer, {"question": question, "argument": argument},
                                  shift=False)
        except ValueError:  # an argument without tokens has no span
            continue
        if max_tokens is None or len(enc.ids) <= max_tokens:
            encoded.append(enc)
            kept.append(i)
    if not encoded:
        raise UserError("probe: no candidate fits the model's context; use shorter rows")
    device = device or next(model.parameters()).device
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(encoded), batch_size), desc="arguer states", unit="batch",
                              disable=None if progress else True, dynamic_ncols=True):
                ids, mask, spans = pad_batch(encoded[start:start + batch_size], tokenizer.pad_token_id, side="left")
                arg_spans = [[s["argument"]] for s in spans]
                ids, mask = ids.to(device), mask.to(device)
                with capture_kv(model, arg_spans, mask) as cap:
                    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                output_hidden_states=True, use_cache=False, logits_to_keep=1)
                hidden = torch.stack(out.hidden_states)  # (layers + 1, B, T, D)
                chunks["hidden_mean"].append(np.stack([hidden[:, r, s:e].float().mean(1).cpu().numpy()
                                                       for r, ((s, e),) in enumerate(arg_spans)], axis=1))
                chunks["hidden_last"].append(np.stack([hidden[:, r, e - 1].float().cpu().numpy()
                                                       for r, ((_, e),) in enumerate(arg_spans)], axis=1))
                states = cap.kv
                layers = sorted({layer for _, layer in states.tensors})
                per_layer = []
                for layer in layers:
                    k = torch.split(states.tensors[("k", layer)].float(), list(states.lengths))  # B x (len, Dk)
                    v = torch.split(states.tensors[("v", layer)].float(), list(states.lengths))
                    per_layer.append(torch.stack([torch.cat([a.mean(0), b.mean(0)]) for a, b in zip(k, v)]))
                chunks["kv_mean"].append(torch.stack(per_layer).cpu().numpy())  # (layers, B, Dk + Dv)
    finally:
        model.train(was_training)
    return {k: np.concatenate(v, axis=1).astype(np.float32) for k, v in chunks.items()}, kept


def argument_tokens(tokenizer, argument: str) -> int:
    """The argument's token count: the length of its span in the arguer prompt (tokenized on its own)."""
    from cot_transplant.prompts.segments import Segment, tokenize_segment

    return len(tokenize_segment(tokenizer, Segment(argument)))


# --- the command ------------------------------------------------------------------------------------


def run_probes(data: str | Path, out: str | Path, model_name: str | None = None, rows: int = 200, folds: int = 5,
               template_name: str = "alpaca-json", batch_size: int = 8, C: float = 1.0, seed: int = 0) -> dict:
    """Probe the base model's arguer states on the first `rows` rows of `data`; write probe.json and probe.png.

    Raises:
        UserError: unreadable data, an unknown model or template, too few rows for the folds.
    """
    from cot_transplant.analysis.probe_baselines import probe_baselines
    from cot_transplant.data.io import read_records
    from cot_transplant.models import DEFAULT_MODEL, load_model, load_tokenizer
    from cot_transplant.prompts.templates import get_template
    from cot_transplant.provenance import stamp
    from cot_transplant.runs.rundir import atomic_write_text
    from cot_transplant.train.setup import resolve_device

    if rows < 2:
        raise UserError(f"--rows {rows}: a probe needs at least 2 rows")
    t0 = time.time()
    model_name = model_name or DEFAULT_MODEL
    records = read_records(data, require_choice=False)[:rows]
    group_folds(np.arange(len(records)), folds)  # too few rows: say so before loading the model
    tokenizer = load_tokenizer(model_name)
    template = get_template(template_name, tokenizer)
    device = resolve_device("auto")
    model = load_model(model_name, seed=seed, vocab_size=len(tokenizer)).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    items, labels, groups = candidate_items(records)
    limit = getattr(model.config, "max_position_embeddings", None)
    features, kept = extract_features(model, tokenizer, template, items, batch_size, device, limit, progress=True)
    labels, groups = labels[kept], groups[kept]
    # A question that lost one answer to the length limit would leave an unpaired answer: drop it too.
    paired = np.isin(groups, [g for g in np.unique(groups) if (groups == g).sum() == 2])
    features = {k: v[:, paired] for k, v in features.items()}
    labels, groups = labels[paired], groups[paired]
    texts = [items[i][1] for i in np.asarray(kept)[paired]]
    splits = group_folds(groups, folds)  # one set of folds for every layer and both baselines
    probes = probe_layers(features, labels, groups, splits, C, seed, progress=True)
    baselines = probe_baselines(texts, [argument_tokens(tokenizer, t) for t in texts], labels, groups, splits, C)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": {"data": str(data), "model": model_name, "rows": rows, "folds": folds, "template": template.name,
                   "C": C, "seed": seed, "batch_size": batch_size, "device": str(device), "spans": "unshifted",
                   "cv": "GroupKFold by question",
                   "probe": "StandardScaler + L2 LogisticRegression (liblinear)"},
        "n_rows": len(records), "n_questions": int(len(np.unique(groups))), "n_items": int(len(labels)),
        "dropped_items": len(items) - int(len(labels)),
        "dims": {k: int(v.shape[-1]) for k, v in features.items()},
        "layers": {"hidden": "0 = embeddings, l = output of decoder layer l (the last after the final norm)",
                   "kv": "l = k_proj/v_proj of decoder layer l (computed from hidden state l)"},
        "fold_questions": [sorted(int(g) for g in np.unique(groups[test])) for _, test in splits],
        "probes": probes, "best": best_layers(probes), "baselines": baselines, "wall_s": round(time.time() - t0, 1),
        "_provenance": stamp(),
    }
    atomic_write_text(out / "probe.json", json.dumps(result, indent=1))
    try:
        plot_probes(result, out / "probe.png")
    except Exception as exc:  # a figure must never cost the numbers
        result["figure"] = f"not written: {exc}"
    return result


def best_layers(probes: dict[str, list[dict]]) -> dict[str, dict]:
    """Per feature set, the layer with the highest mean AUROC (with its shuffled control)."""
    out = {}
    for kind, rows in probes.items():
        known = [r for r in rows if r["auroc"] is not None]
        if known:
            r = max(known, key=lambda r: r["auroc"])
            out[kind] = {"layer": r["layer"], "auroc": r["auroc"], "auroc_sd": r["auroc_sd"],
                         "auroc_shuffled": r.get("auroc_shuffled")}
    return out


def plot_probes(result: dict, out_png) -> object:
    """AUROC per layer of each feature set (+- fold sd), shuffled-label controls dashed, chance at 0.5,
    the length-only and text-only baselines as dash-dotted horizontal lines.

    `out_png` is a path or a binary file object; returns it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cot_transplant.analysis.probe_baselines import BASELINE_LABELS

    fig = Figure(figsize=(8, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = {"hidden_mean": "tab:blue", "hidden_last": "tab:green", "kv_mean": "tab:orange"}
    for kind, rows in result["probes"].items():
        color = colors.get(kind, "tab:gray")
        x = np.array([r["layer"] for r in rows])
        y = np.array([np.nan if r["auroc"] is None else r["auroc"] for r in rows])
        sd = np.array([np.nan if r["auroc_sd"] is None else r["auroc_sd"] for r in rows])
        ax.plot(x, y, marker="o", ms=3, color=color, label=KIND_LABELS.get(kind, kind))
        ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15, lw=0)
        if any("auroc_shuffled" in r for r in rows):
            ax.plot(x, [np.nan if r.get("auroc_shuffled") is None else r["auroc_shuffled"] for r in rows],
                    color=color, ls="--", lw=1, alpha=0.7)
    ax.axhline(0.5, color="0.3", ls=(0, (1, 3)), lw=1.4, label="chance (dashed: shuffled labels)")
    lows = [0.3]
    for name, base in result.get("baselines", {}).items():  # probe.json files from before baselines have none
        if base.get("auroc") is not None:
            ax.axhline(base["auroc"], color=BASELINE_COLORS.get(name, "0.5"), ls="-.", lw=1.3,
                       label=f"baseline: {BASELINE_LABELS.get(name, name)}, {base['auroc']:.2f}")
            lows.append(base["auroc"] - 0.05)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(f"AUROC, {result['config']['folds']}-fold CV by question (mean +- sd)")
    ax.set_ylim(min(lows), 1.02)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    cfg = result["config"]
    ax.set_title(f"correct vs incorrect argument: {cfg['model']}, {result['n_questions']} questions, "
                 f"{cfg['template']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110, format="png")
    return out_png


def format_probes(result: dict, data: Path, folds: int) -> str:
    """The terminal lines of `run_probes`' result: the best layer per kind of state, then the surface baselines."""
    from cot_transplant.analysis.probe_baselines import BASELINE_LABELS

    lines = [f"probe {result['config']['model']} on {data}: {result['n_questions']} questions, "
             f"{folds}-fold CV grouped by question"]
    for kind, best in result["best"].items():
        shuffled = best.get("auroc_shuffled")
        lines.append(f"   {KIND_LABELS[kind]}: best layer {best['layer']}, AUROC {best['auroc']:.3f}"
                     + ("" if shuffled is None else f" (shuffled labels {shuffled:.3f})"))
    for name, base in result["baselines"].items():
        auroc = "n/a" if base["auroc"] is None else f"{base['auroc']:.3f}"
        lines.append(f"   baseline, {BASELINE_LABELS[name]}: AUROC {auroc} (same rows and folds)")
    return "\n".join(lines)
