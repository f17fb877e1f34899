"""A run's rows as its config names them: `data.path`, or the synthetic rows of `data.synthetic`; and their split."""

from __future__ import annotations

import dataclasses
import sys

from cot_transplant.config import Config
from cot_transplant.data.record import Record
from cot_transplant.errors import UserError


def load_records(cfg: Config) -> list[Record]:
    """Rows from `data.path`, or synthetic rows from `data.synthetic`, then the data conditions in order:
    `data.max_rows`, `data.mask`, `data.argument: none` (empty choice arguments), `data.planted_fraction`
    (verdicts for the arguer on a seeded share of the rows). Deterministic for a config."""
    if cfg.data.path:
        from cot_transplant.data.io import read_records

        records = read_records(cfg.data.path, require_choice=True, skip_invalid=cfg.data.skip_invalid)
    else:
        from cot_transplant.data.synth import synthesize

        s = cfg.data.synthetic
        records = synthesize(s.n, s.seed, steps=tuple(s.steps), error_kind=s.error_kind, error_step=s.error_step,
                             argument_accuracy=s.argument_accuracy, short=s.short)
        if s.planted:
            from cot_transplant.data.plant import plant_all

            records = plant_all(records, s.seed, s.argument_accuracy)
    if cfg.data.max_rows is not None:
        records = records[: cfg.data.max_rows]
    if cfg.data.mask:
        from cot_transplant.data.mask import mask_choice_argument

        records = [dataclasses.replace(r, choice_argument=mask_choice_argument(r.choice_argument or ""))
                   for r in records]
    if cfg.data.argument == "none":  # the chooser prompt of every variant then reads as `no-argument`'s
        records = [dataclasses.replace(r, choice_argument="") for r in records]
    if cfg.data.planted_fraction > 0:
        from cot_transplant.data.plant import plant_fraction

        records = plant_fraction(records, cfg.data.planted_fraction, cfg.data.planted_seed,
                                 cfg.data.planted_position)
    if len(records) < 3:
        raise UserError(f"data: {len(records)} usable rows; a run needs at least 3 (train, val, test)")
    return records


def split_records(cfg: Config, records: list[Record]) -> dict:
    """Row ids (positions in `records`) per split as `data.split` names them, plus `dropped` for `original`;
    the dropped rows are reported in one line on stderr."""
    from cot_transplant.data.splits import describe_dropped, make_split

    splits = make_split(cfg.data.split, [r.question for r in records], cfg.data.val_fraction,
                        cfg.data.test_fraction, cfg.data.split_seed)
    note = describe_dropped(splits)
    if note:
        print(f"cot-transplant: note: {note}", file=sys.stderr)
    return splits
