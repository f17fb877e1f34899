"""Evaluation of a split: chooser probabilities of "1"/"2" per row -> metrics + predictions file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cot_transplant.runs import rundir
from cot_transplant.runs.metrics import eval_metrics, prefix
from cot_transplant.train.batches import by_length, collate, cut_span
from cot_transplant.train.setup import Session
from cot_transplant.train.steps import forward


def predict(session: Session, split: str, fraction: float | None = None, dist=None,
            hide_tail: bool = False) -> dict[str, list]:
    """P1, P2 per row of `split` under the current adapters, in eval mode and without gradients.

    With several processes (`dist`), each predicts its share and all get every row, in row-id order.
    `hide_tail`: with `fraction` < 1, also mask the argument tokens past the cut from the chooser
    (`hide_tails`; the truncation study's `--tail hidden`), instead of letting it read them as text.
    """
    cfg, model = session.cfg, session.model
    fraction = cfg.transplant.fraction if fraction is None else fraction
    examples = session.examples[split] if dist is None else dist.shard(session.examples[split])
    # Batches of similar lengths (less padding); the outputs go back to this order below.
    order = by_length(list(range(len(examples))), examples)
    examples = [examples[i] for i in order]
    out = {"row_id": [], "p_cand1": [], "p_cand2": [], "label": [], "argument_choice": [], "loss": []}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(examples), cfg.eval.batch_size):
                chunk = examples[i: i + cfg.eval.batch_size]
                batch = collate(chunk, session.tokenizer.pad_token_id, fraction, session.device)
                if hide_tail and fraction < 1:
                    hide_tails(batch.chooser_mask, collate(chunk, session.tokenizer.pad_token_id, 1.0).chooser_spans,
                               fraction)
                loss, p1, p2, _ = forward(model, batch, session.settings, session.step, session.arguer_cache)
                p1, p2, loss = torch.stack([p1.float(), p2.float(), loss.float()]).cpu().tolist()  # one host copy
                out["row_id"] += batch.row_ids
                out["p_cand1"] += p1
                out["p_cand2"] += p2
                out["label"] += [e.label for e in chunk]
                out["argument_choice"] += [e.argument_choice for e in chunk]
                out["loss"] += loss
    finally:
        model.train(was_training)
    back = np.argsort(order, kind="stable")
    out = {k: [v[i] for i in back] for k, v in out.items()}
    if dist is not None and dist.world > 1:
        out = dist.gather_lists(out)
        order = np.argsort(out["row_id"], kind="stable")
        out = {k: [v[i] for i in order] for k, v in out.items()}
    return out


def hide_tails(chooser_mask, full_spans, fraction: float) -> None:
    """Zero `chooser_mask` (B, T) past the first `fraction` of each span in `full_spans` (B rows x spans); in place.

    The cut is `batches.cut_span`'s, so the hidden tokens are exactly those the cut transplant leaves out.
    """
    for r, spans in enumerate(full_spans):
        for full in spans:
            _, cut_end = cut_span(full, fraction)
            chooser_mask[r, cut_end:full[1]] = 0


def metrics_of(pred: dict[str, list]) -> dict:
    """`eval_metrics` of `predict`'s output, plus the mean loss."""
    m = eval_metrics(pred["p_cand1"], pred["p_cand2"], pred["label"], pred["argument_choice"])
    m["loss"] = float(np.mean(pred["loss"])) if pred.get("loss") else None
    return m


def evaluate(session: Session, split: str, samples: int, run: Path | None, dist=None,
             predictions: Path | None = None) -> dict:
    """Evaluate one split, write its predictions, return the metrics.jsonl record.

    The predictions go to `predictions` if given, else to RUN/predictions/<split>-<samples>.csv when `run` is
    given; with neither, nothing is written.
    """
    t0 = time.time()
    pred = predict(session, split, dist=dist)
    rows = zip(pred["row_id"], pred["p_cand1"], pred["p_cand2"], pred["label"], pred["argument_choice"])
    if predictions is not None:
        rundir.write_prediction_rows(predictions, rows)
    elif run is not None:
        rundir.write_predictions(run, split, samples, list(rows))
    m = metrics_of(pred)
    return {"kind": "eval", "split": split, "samples": samples, **prefix(m, split),
            "eval_wall_s": time.time() - t0, "time": time.time()}
