"""The arguer's states over every candidate argument, computed once and kept on disk.

The base model (no adapters) reads each row's two candidate arguments after the arguer prompt
(`prompts.templates`, tokenized with `train.batches.encode_template`, so the argument span is exact).
Per layer, three feature sets, each one vector per candidate:
  hidden_mean   the residual stream averaged over the argument's tokens
  hidden_last   the residual stream at the argument's last token (it has read the whole argument)
  kv_mean       that layer's k_proj and v_proj outputs (before RoPE, the transplant's site),
                averaged over the argument's tokens, concatenated
Layer l is `hidden_states[l]` of a transformers forward: 0 the embeddings, l the output of decoder
layer l (the last after the model's final norm); K/V of decoder layer l are at l, the stream they are
computed from. Spans are unshifted: the states at the argument's own tokens.

`features/` in the probe's output directory holds `<kind>.npy`, float16 (layers, n_kept, d), and
`meta.json`: what they were computed from (the data file's sha256, model, template, rows), which items
they hold (`kept`, indices into `candidate_items` of those rows), each kept argument's token count,
and how far the extraction got (`done`, in its longest-first order). A rerun on the same file and
model with other probe options, or fewer rows, reads them and loads no model; an interrupted
extraction resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from cot_transplant.errors import UserError

KINDS = ("hidden_mean", "hidden_last", "kv_mean")
FLUSH_S = 60.0  # how much work an interruption may lose


def candidate_items(records) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Each row's correct and incorrect argument as (question, argument), with labels (1/0) and rows:
    items 2i and 2i + 1 are row i's, correct first."""
    items, labels, rows = [], [], []
    for i, rec in enumerate(records):
        for argument, label in ((rec.correct_argument, 1), (rec.incorrect_argument, 0)):
            items.append((rec.question, argument))
            labels.append(label)
            rows.append(i)
    return items, np.array(labels), np.array(rows)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(folder: Path, key: dict, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
    """The stored features of the first `rows` rows, if `folder` holds a finished extraction of the same
    `key` (data, model, template) over at least that many rows: ({kind: memmap}, kept, n_tokens)."""
    meta = _read_meta(folder)
    if meta is None or meta.get("key") != key or not meta.get("complete") or meta["rows"] < rows:
        return None
    kept, n_tokens = np.array(meta["kept"], dtype=np.int64), np.array(meta["n_tokens"], dtype=np.int64)
    take = kept < 2 * rows
    try:
        features = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in KINDS}
    except (OSError, ValueError):  # a meta.json without its arrays: compute them again
        return None
    if take.all():
        return features, kept, n_tokens
    return {k: v[:, take] for k, v in features.items()}, kept[take], n_tokens[take]


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def arguer_features(folder, key: dict, records, model_name: str, template_name: str, batch_size: int = 8,
                    progress: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:
    """The features of `records`' candidates: read from `folder` when stored, else computed into it.

    Returns:
        ({kind: (layers, n_kept, d) float16}, kept item indices, their token counts, {"cached": bool,
        "device", "extract_s"}). Items whose prompt is longer than the model's context, or whose argument
        has no tokens, are left out.
    Raises:
        UserError: an unknown model or template, or no candidate that fits the context.
    """
    from cot_transplant.models import load_model, load_tokenizer
    from cot_transplant.prompts.templates import get_template
    from cot_transplant.train.setup import resolve_device

    folder = Path(folder)
    found = cached(folder, key, len(records))
    if found is not None:
        return (*found, {"cached": True, "device": (_read_meta(folder) or {}).get("device"), "extract_s": 0.0})
    t0 = time.time()
    tokenizer = load_tokenizer(model_name)
    template = get_template(template_name, tokenizer)
    device = resolve_device("auto")
    model = load_model(model_name, vocab_size=len(tokenizer)).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    items, _, _ = candidate_items(records)
    encoded, kept = encode_items(tokenizer, template, items, getattr(model.config, "max_position_embeddings", None))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))  # longest first: less padding
    meta = {"key": key, "rows": len(records), "kept": kept, "device": str(device), "complete": False,
            "n_tokens": [e.spans["argument"][1] - e.spans["argument"][0] for e in encoded]}
    old = _read_meta(folder)
    same = old and {k: old.get(k) for k in ("key", "rows", "kept")} == {k: meta[k] for k in ("key", "rows", "kept")}
    done = old["done"] if same and all((folder / f"{k}.npy").is_file() for k in KINDS) else 0
    arrays: dict[str, np.ndarray] = {}
    folder.mkdir(parents=True, exist_ok=True)
    _flush(folder, arrays, {**meta, "done": done})  # an older extraction's meta must not vouch for these arrays
    if done:
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r+") for k in KINDS}
    last_flush = time.time()
    was_training = model.training
    model.eval()
    try:
        from tqdm.auto import tqdm

        for start in tqdm(range(done, len(order), batch_size), desc="arguer states", unit="batch",
                          initial=done // batch_size, total=-(-len(order) // batch_size),
                          disable=None if progress else True, dynamic_ncols=True):
            where = order[start:start + batch_size]
            batch = batch_features(model, [encoded[i] for i in where], tokenizer.pad_token_id, device)
            if not arrays:
                from numpy.lib.format import open_memmap

                arrays = {k: open_memmap(folder / f"{k}.npy", mode="w+", dtype=np.float16,
                                         shape=(v.shape[0], len(encoded), v.shape[2])) for k, v in batch.items()}
            for k, v in batch.items():
                if not np.isfinite(v).all() or np.abs(v).max() >= np.finfo(np.float16).max:
                    raise UserError(f"probe: {k} of items {[kept[i] for i in where]} is not finite in float16")
                arrays[k][:, where] = v.astype(np.float16)
            if time.time() - last_flush > FLUSH_S:
                _flush(folder, arrays, {**meta, "done": start + len(where)})
                last_flush = time.time()
    finally:
        model.train(was_training)
    meta.update(done=len(order), complete=True, extract_s=round(time.time() - t0, 1))
    _flush(folder, arrays, meta)
    features = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in KINDS}
    return (features, np.array(kept, dtype=np.int64), np.array(meta["n_tokens"], dtype=np.int64),
            {"cached": False, "device": str(device), "extract_s": meta["extract_s"]})


def _flush(folder: Path, arrays: dict, meta: dict) -> None:
    from cot_transplant.runs.rundir import atomic_write_text

    for a in arrays.values():
        a.flush()
    atomic_write_text(folder / "meta.json", json.dumps(meta))


def encode_items(tokenizer, template, items, max_tokens: int | None) -> tuple[list, list[int]]:
    """The arguer prompt of each (question, argument), and the indices of those kept: an argument without
    tokens has no span, and a prompt longer than `max_tokens` does not fit.

    Raises:
        UserError: nothing is kept.
    """
    from cot_transplant.train.batches import encode_template

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
    return encoded, kept


def batch_features(model, encoded, pad_id: int, device) -> dict[str, np.ndarray]:
    """One forward of the plain model over a batch of arguer prompts: {kind: (layers, B, d) float32}."""
    import torch

    from cot_transplant.prompts.segments import pad_batch, position_ids
    from cot_transplant.transplant import capture_kv

    ids, mask, spans = pad_batch(encoded, pad_id, side="left")
    arg_spans = [[s["argument"]] for s in spans]
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        with capture_kv(model, arg_spans, mask) as cap:
            out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                        output_hidden_states=True, use_cache=False, logits_to_keep=1)
        hidden = torch.stack(out.hidden_states)  # (layers + 1, B, T, D)
        mean = torch.stack([hidden[:, r, s:e].float().mean(1) for r, ((s, e),) in enumerate(arg_spans)], dim=1)
        last = torch.stack([hidden[:, r, e - 1].float() for r, ((_, e),) in enumerate(arg_spans)], dim=1)
        states = cap.kv
        per_layer = []
        for layer in sorted({layer for _, layer in states.tensors}):
            k = torch.split(states.tensors[("k", layer)].float(), list(states.lengths))  # B x (len, Dk)
            v = torch.split(states.tensors[("v", layer)].float(), list(states.lengths))
            per_layer.append(torch.stack([torch.cat([a.mean(0), b.mean(0)]) for a, b in zip(k, v)]))
        kv = torch.stack(per_layer)  # (layers, B, Dk + Dv)
    return {"hidden_mean": mean.cpu().numpy(), "hidden_last": last.cpu().numpy(), "kv_mean": kv.cpu().numpy()}
