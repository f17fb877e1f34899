"""`cot-transplant eval`'s recipe: a saved checkpoint evaluated again, on its run's splits or on another file,
optionally under an eval-only control (each split through `train.evaluate.evaluate`).

Writes RUN/<stem>.json (one record per split, as metrics.jsonl's eval records plus what was evaluated) and
RUN/<stem>-<split>.csv (the predictions), where <stem> is `eval_stem`'s.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from cot_transplant.config import Config
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir

CONTROLS = ("swapped-kv", "shuffled-kv", "base-arguer")
EXAMPLE_CONTROLS = ("swapped-kv", "shuffled-kv")  # controls that rebuild the examples (`setup`'s `control`)
CONTROLLED = ("joint", "frozen-arguer")  # variants whose chooser reads transplanted K/V with both adapters
TRAINED_ARGUER = ("joint", "adversarial")  # variants with an arguer adapter trained apart from the chooser's
# Why base-arguer refuses a variant, where the reason is more than "not in TRAINED_ARGUER".
_NO_BASE_ARGUER = {
    "frozen-arguer": "its arguer never trained, so its plain eval (no --control) already reads the base arguer",
    "text-only": "it has no arguer; its plain eval (no --control) is the text-only level to compare with",
    "shared": "one adapter plays both roles, so the arguer's cannot be reset without the chooser's; "
              "train the run as joint for this control",
}


def check_control(run: Path, variant: str, control: str | None, donors: str | None) -> None:
    """Raise UserError unless `control` (an eval-only control, or None) and `donors` fit a run trained as `variant`."""
    if donors is not None and control != "shuffled-kv":
        raise UserError("--donors applies only with --control shuffled-kv")
    if control == "base-arguer":
        if variant not in TRAINED_ARGUER:
            why = _NO_BASE_ARGUER.get(variant, "it needs an arguer adapter trained apart from the chooser's")
            raise UserError(f"{run}: --control base-arguer needs a run trained as {' or '.join(TRAINED_ARGUER)}; "
                            f"this run was trained as {variant}: {why}")
        return
    if control is not None and variant not in CONTROLLED:
        raise UserError(f"{run}: --control {control} needs a run trained as {' or '.join(CONTROLLED)} (a chooser "
                        f"that reads transplanted K/V with both adapters); this run was trained as {variant}")


def eval_stem(checkpoint: str, data: str | None, control: str | None) -> str:
    """`eval-<checkpoint>[-<data stem>][-control-<control>]`: the eval outputs' common name."""
    return (f"eval-{checkpoint}" + (f"-{Path(data).stem}" if data else "")
            + (f"-control-{control}" if control else ""))


def eval_config(cfg: Config, fraction: float | None = None, donors: str | None = None,
                data: str | None = None) -> Config:
    """The run's config with eval's --fraction, --donors and --data applied (UserError on a bad fraction)."""
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise UserError("--fraction must be in (0, 1]")
        cfg = dataclasses.replace(cfg, transplant=dataclasses.replace(cfg.transplant, fraction=fraction))
    if donors:
        cfg = dataclasses.replace(cfg, transplant=dataclasses.replace(cfg.transplant, donors=donors))
    if data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=data, split="random",
                                                                val_fraction=0.0, test_fraction=0.0))
    return cfg


def load_evaluated(ckpt: Path, model, control: str | None) -> dict:
    """Load checkpoint `ckpt`'s adapters into `model` (as `setup` built it, before any step) and return its state
    JSON; the checkpoint is only read.

    Under `base-arguer`, the arguer adapter then goes back to the weights `model` held before the load: the
    arguer as the run started it, i.e. `lora.init_adapter`'s weights, or a fresh LoRA whose zero B makes it the
    base model. The chooser keeps the checkpoint's weights; the step and its fast path are unchanged (they read
    whatever weights the arguer adapter holds, and no adapter is switched here).
    """
    from cot_transplant.train.adapters import adapter_state, load_adapter_state
    from cot_transplant.train.checkpoint import load_checkpoint

    initial = adapter_state(model, "arguer") if control == "base-arguer" else None
    state = load_checkpoint(ckpt, model, restore_rng=False)
    if initial is not None:
        load_adapter_state(model, "arguer", initial)
    return state


def chosen_checkpoint(run: Path) -> Path:
    """The checkpoint saved at the samples count chosen on validation (`runs.summary.summarize`).

    Raises:
        UserError: the run has no validation choice yet, or kept no checkpoint at that point.
    """
    from cot_transplant.runs.summary import summarize

    at = summarize(run).get("test_at_chosen") or {}
    samples = at.get("samples")
    found = {}
    for path in sorted((run / "checkpoints").glob("step-*")):
        if (path / "state.json").is_file():
            found[json.loads((path / "state.json").read_text(encoding="utf-8"))["cursor"]["samples"]] = path
    if samples is None or samples not in found:
        raise UserError(f"{run}: no checkpoint at the validation-chosen point (samples {samples}); kept checkpoints "
                        f"are at samples {sorted(found)}: give --checkpoint K, or keep more (checkpoint.keep)")
    return found[samples]


def evaluate_checkpoint(run: Path, checkpoint: int | str | None = None, data: str | None = None,
                        splits: list[str] | None = None, fraction: float | None = None, control: str | None = None,
                        donors: str | None = None,
                        report: Callable[[dict, list, list | None], None] | None = None) -> Path:
    """Evaluate `run`'s `checkpoint` (a step, "chosen", or None: the latest); returns RUN/<stem>.json.

    `data`: every row of this file instead of the run's `splits` (default: its eval.splits); `fraction`,
    `control` (swapped-kv | shuffled-kv | base-arguer) and `donors` as `cot-transplant eval` documents them. After each
    split, `report(record, rows, train_rows)` gets its record, its rows (Records, in prediction order) and the
    run's own rows (None with `data`), e.g. to print it beside the baselines.

    Raises:
        UserError: no such run or checkpoint, a control the run's variant cannot take, a bad fraction.
    """
    from cot_transplant.train.evaluate import evaluate
    from cot_transplant.train.setup import setup

    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found; give a directory under runs/")
    cfg, _ = rundir.read_run_config(run)
    check_control(run, cfg.variant, control, donors)
    cfg = eval_config(cfg, fraction, donors, data)
    label = control
    if control == "shuffled-kv" and cfg.transplant.donors != "random":
        label = f"{control}-{cfg.transplant.donors}"
    ckpt = chosen_checkpoint(run) if checkpoint == "chosen" else rundir.find_checkpoint(run, checkpoint)
    # The step is the run's own (cfg.variant); the examples follow swapped-kv / shuffled-kv, the arguer's weights
    # base-arguer. Each split is evaluated once here, on disjoint rows: no arguer state could be served twice.
    session = setup(cfg, control=control if control in EXAMPLE_CONTROLS else None, use="evaluate-once")
    state = load_evaluated(ckpt, session.model, control)
    stem = eval_stem(ckpt.name, data, label)
    by_id = {r.row_id: r for r in session.records}
    results = []
    for split in ["train"] if data else (splits or cfg.eval.splits):
        predictions = run / f"{stem}-{split}.csv"
        record = evaluate(session, split, state["cursor"]["samples"], None, predictions=predictions)
        record.update(checkpoint=ckpt.name, data=data, fraction=cfg.transplant.fraction,
                      predictions=predictions.name)
        if control:
            record.update(control=control, **({"donors": cfg.transplant.donors} if control == "shuffled-kv" else {}),
                          **({"arguer_init": cfg.lora.init_adapter} if control == "base-arguer" else {}))
        results.append(record)
        if report is not None:
            rows = [by_id[i] for i in rundir.read_predictions(predictions)["row_id"]]
            report(record, rows, None if data else session.records)
    out = run / f"{stem}.json"
    rundir.atomic_write_text(out, json.dumps(results, indent=1))
    return out
