"""A run's rows as its config names them: `data.path`, or the synthetic rows of `data.synthetic`."""

from __future__ import annotations

import dataclasses

from cot_transplant.config import Config
from cot_transplant.data.record import Record
from cot_transplant.errors import UserError


def load_records(cfg: Config) -> list[Record]:
    """Rows from `data.path`, or synthetic rows from `data.synthetic`; masked when `data.mask`."""
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
    if len(records) < 3:
        raise UserError(f"data: {len(records)} usable rows; a run needs at least 3 (train, val, test)")
    return records
