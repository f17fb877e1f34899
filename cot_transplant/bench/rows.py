"""The benchmark's rows: a seeded sample of a data file, and synthetic rows, as tokenized examples."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cot_transplant.config import Config
from cot_transplant.data.record import Record
from cot_transplant.errors import UserError
from cot_transplant.runs.records import load_records
from cot_transplant.train.batches import Example
from cot_transplant.train.setup import build_examples


def data_rows(cfg: Config, path: str) -> list[Record]:
    """Every row of `path`, read and validated as `train` reads it."""
    if not Path(path).is_file():
        raise UserError(f"--data {path}: file not found")
    return load_records(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=path, max_rows=None)))


def synthetic_rows(cfg: Config, n: int) -> list[Record]:
    """`n` synthetic rows from `data.synthetic` (its generator settings and seed), as `train` makes them."""
    synth = dataclasses.replace(cfg.data.synthetic, n=max(n, 3))
    return load_records(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=None, synthetic=synth,
                                                                            max_rows=None)))


def sample_examples(records: list[Record], n: int, seed: int, cfg: Config, template, tokenizer,
                    limit: int | None) -> tuple[list[Example], int]:
    """`n` examples from a seeded random order of `records`, skipping rows over `limit`; and the skip count.

    Raises:
        UserError: fewer than `n` rows fit.
    """
    records = [dataclasses.replace(r, row_id=i) for i, r in enumerate(records)]
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(records))]
    out: list[Example] = []
    skipped, start = 0, 0
    while len(out) < n and start < len(order):
        chunk = order[start: start + 2 * (n - len(out)) + 4]
        start += len(chunk)
        built, dropped = build_examples(records, chunk, cfg, template, tokenizer, limit)
        out += built
        skipped += dropped
    if len(out) < n:
        raise UserError(f"bench: only {len(out)} of {len(records)} rows fit in {limit} tokens, {n} needed; "
                        "lower --rows or raise prompt.max_tokens")
    return out[:n], skipped
