"""What `train --resume RUN [train.max_samples=N]` trains: the run's own config, lengthened where asked."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cot_transplant.config import Config, load_config
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir

EXTENDABLE = ("train.max_samples", "train.epochs")


def resume_config(run: Path, overrides: list[str]) -> Config:
    """The config `run` resumes with: its own, with `overrides` (only `EXTENDABLE` keys) applied and saved back.

    Raises:
        UserError: no such run directory, no checkpoint to resume from, or an override that is not a length.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found; give a directory under runs/")
    cfg, _ = rundir.read_run_config(run)
    if rundir.latest_checkpoint(run) is None:
        raise UserError(f"{run}: has no checkpoint to resume from; start it again with `cot-transplant train`")
    if overrides:
        from cot_transplant.train.steps.settings import transplant_spec

        cfg = extended_config(cfg, overrides)
        if int(os.environ.get("RANK", "0")) == 0:  # one writer under `accelerate launch`
            rundir.write_config(run, cfg, transplant_spec(cfg))
    return cfg


def extended_config(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with a resumed run's length raised: only `train.max_samples` / `train.epochs` may change.

    Raises:
        UserError: a CONFIG file or another key given with --resume.
    """
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item or key not in EXTENDABLE:
            raise UserError(f"--resume takes the run's own config; only {' or '.join(EXTENDABLE)}=N may be given "
                            f"to train it further, got {item!r}")
    values = {k: v for k, v in dataclasses.asdict(load_config(None, overrides).train).items()
              if f"train.{k}" in {o.split("=", 1)[0] for o in overrides}}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **values))
