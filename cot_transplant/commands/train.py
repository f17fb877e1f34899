"""`cot-transplant train` and `cot-transplant eval`."""

from __future__ import annotations

import os
from pathlib import Path

CONTROLS = ("swapped-kv", "shuffled-kv")
CONTROLLED = ("joint", "frozen-arguer")  # variants whose chooser reads transplanted K/V with both adapters
DONORS = ("random", "length-matched")  # config.DONORS (not imported: the CLI imports no package code at top level)


def register(sub) -> None:
    p = sub.add_parser("train", help="train arguer and chooser through the transplant (one run)",
                       description="Train one run from a YAML config with dotted key=value overrides, "
                                   "or resume a run directory.")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.optim.lr=1e-4 variant=text-only")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its latest checkpoint (its own config; train.max_samples=N or "
                        "train.epochs=E trains it further)")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="re-evaluate a run's checkpoint on its splits or another file")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", help="evaluate on all rows of this file instead of the run's splits")
    e.add_argument("--checkpoint", type=checkpoint_arg, metavar="K",
                   help="checkpoint step, or 'chosen': the one at the evaluation chosen on validation "
                        "(default: the latest)")
    e.add_argument("--split", action="append", choices=["val", "test", "train"],
                   help="split(s) of the run's data to evaluate (default: the run's eval.splits)")
    e.add_argument("--fraction", type=float, help="transplant only the first fraction of each argument's K/V")
    e.add_argument("--control", choices=CONTROLS,
                   help="eval-only control on a joint or frozen-arguer checkpoint: swapped-kv (each candidate slot "
                        "gets the other candidate's K/V) or shuffled-kv (another row's, within the split)")
    e.add_argument("--donors", choices=DONORS,
                   help="with --control shuffled-kv: random or length-matched donors (default: the run's "
                        "transplant.donors)")
    e.set_defaults(func=run_eval)


def run_train(args) -> int:
    from cot_transplant.config import load_config
    from cot_transplant.errors import UserError
    from cot_transplant.train import rundir
    from cot_transplant.train.loop import train

    if args.resume:
        run = Path(args.resume)
        if not run.is_dir():
            raise UserError(f"{run}: run directory not found; give a directory under runs/")
        cfg, _ = rundir.read_run_config(run)
        if rundir.latest_checkpoint(run) is None:
            raise UserError(f"{run}: has no checkpoint to resume from; start it again with `cot-transplant train`")
        extend = [a for a in ([args.config] if args.config else []) + list(args.overrides)]
        if extend:
            cfg = extended_config(cfg, extend)
            if int(os.environ.get("RANK", "0")) == 0:  # one writer under `accelerate launch`
                rundir.write_config(run, cfg)
        train(cfg, resume=run, report=report)
        return 0
    if not args.config:
        raise UserError("train needs a CONFIG file (e.g. configs/demo.yaml) or --resume RUN_DIR")
    cfg = load_config(args.config, args.overrides)
    train(cfg, config_path=args.config, report=report)
    return 0


def report(summary: dict) -> dict:
    """`analysis.run_summary.report_run` of a finished run's summary (empty on processes other than the main one)."""
    from cot_transplant.analysis.run_summary import report_run

    return report_run(summary) if summary else summary


EXTENDABLE = ("train.max_samples", "train.epochs")


def extended_config(cfg, overrides: list[str]):
    """`cfg` with a resumed run's length raised: only `train.max_samples` / `train.epochs` may change.

    Raises:
        UserError: a CONFIG file or another key given with --resume.
    """
    import dataclasses

    from cot_transplant.config import load_config
    from cot_transplant.errors import UserError

    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item or key not in EXTENDABLE:
            raise UserError(f"--resume takes the run's own config; only {' or '.join(EXTENDABLE)}=N may be given "
                            f"to train it further, got {item!r}")
    values = {k: v for k, v in dataclasses.asdict(load_config(None, overrides).train).items()
              if f"train.{k}" in {o.split("=", 1)[0] for o in overrides}}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **values))


def check_control(run: Path, variant: str, control: str | None, donors: str | None) -> None:
    """Raise UserError unless `control` (an eval-only control, or None) and `donors` fit a run trained as `variant`."""
    from cot_transplant.errors import UserError

    if donors is not None and control != "shuffled-kv":
        raise UserError("--donors applies only with --control shuffled-kv")
    if control is not None and variant not in CONTROLLED:
        raise UserError(f"{run}: --control {control} needs a run trained as {' or '.join(CONTROLLED)} (a chooser "
                        f"that reads transplanted K/V with both adapters); this run was trained as {variant}")


def eval_stem(checkpoint: str, data: str | None, control: str | None) -> str:
    """`eval-<checkpoint>[-<data stem>][-control-<control>]`: the eval outputs' common name."""
    return (f"eval-{checkpoint}" + (f"-{Path(data).stem}" if data else "")
            + (f"-control-{control}" if control else ""))


def evaluate_split(session, split: str, samples: int) -> tuple[dict, dict]:
    """(the metrics record `train.evaluate.evaluate` logs, the predictions) of one split; nothing written."""
    import time

    from cot_transplant.train.evaluate import metrics_of, predict
    from cot_transplant.train.metrics import prefix

    t0 = time.time()
    pred = predict(session, split)
    m = metrics_of(pred)
    return ({"kind": "eval", "split": split, "samples": samples, **prefix(m, split),
             "eval_wall_s": time.time() - t0, "time": time.time()}, pred)


def eval_config(cfg, args):
    """The run's config with eval's --fraction, --donors and --data applied (UserError on a bad --fraction)."""
    import dataclasses

    from cot_transplant.errors import UserError

    if args.fraction is not None:
        if not 0 < args.fraction <= 1:
            raise UserError("--fraction must be in (0, 1]")
        cfg = dataclasses.replace(cfg, transplant=dataclasses.replace(cfg.transplant, fraction=args.fraction))
    if args.donors:
        cfg = dataclasses.replace(cfg, transplant=dataclasses.replace(cfg.transplant, donors=args.donors))
    if args.data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=args.data, split="random",
                                                                val_fraction=0.0, test_fraction=0.0))
    return cfg


def checkpoint_arg(text: str):
    """`--checkpoint`: a step number or 'chosen'."""
    import argparse

    if text == "chosen":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a checkpoint step (e.g. 4) or 'chosen'") from None


def chosen_checkpoint(run: Path) -> Path:
    """The checkpoint saved at the samples count chosen on validation (`summary.summarize`).

    Raises:
        UserError: the run has no validation choice yet, or kept no checkpoint at that point.
    """
    import json

    from cot_transplant.errors import UserError
    from cot_transplant.train import rundir
    from cot_transplant.train.summary import summarize

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


def run_eval(args) -> int:
    import json

    from cot_transplant.analysis.baselines import format_baselines
    from cot_transplant.analysis.run_summary import run_baselines
    from cot_transplant.errors import UserError
    from cot_transplant.train import rundir
    from cot_transplant.train.checkpoint import load_checkpoint
    from cot_transplant.train.setup import setup

    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found; give a directory under runs/")
    cfg, _ = rundir.read_run_config(run)
    check_control(run, cfg.variant, args.control, args.donors)
    cfg = eval_config(cfg, args)
    control = args.control
    if control == "shuffled-kv" and cfg.transplant.donors != "random":
        control = f"{control}-{cfg.transplant.donors}"
    if args.checkpoint == "chosen":
        ckpt = chosen_checkpoint(run)
    else:
        ckpt = (run / "checkpoints" / f"step-{args.checkpoint}") if args.checkpoint is not None else rundir.latest_checkpoint(run)
    if ckpt is None or not (ckpt / "state.json").is_file():
        raise UserError(f"{run}: checkpoint {args.checkpoint if args.checkpoint is not None else '(latest)'} not found; "
                        f"available: {[p.name for p in sorted((run / 'checkpoints').glob('step-*'))]}")
    # The adapters and the step are the run's own (cfg.variant); only the examples follow the control.
    session = setup(cfg, control=args.control)
    # Each split is evaluated once here, on disjoint rows: no arguer state could be served twice.
    import dataclasses

    session.settings = dataclasses.replace(session.settings, state_cache=None)
    state = load_checkpoint(ckpt, session.model, restore_rng=False)
    splits = ["train"] if args.data else (args.split or cfg.eval.splits)
    stem = eval_stem(ckpt.name, args.data, control)
    by_id = {r.row_id: r for r in session.records}
    results = []
    for split in splits:
        rec, pred = evaluate_split(session, split, state["cursor"]["samples"])
        predictions = run / f"{stem}-{split}.csv"
        rundir.write_prediction_rows(predictions, zip(pred["row_id"], pred["p_cand1"], pred["p_cand2"],
                                                      pred["label"], pred["argument_choice"]))
        rec.update(checkpoint=ckpt.name, data=args.data, fraction=cfg.transplant.fraction,
                   predictions=predictions.name)
        if args.control:
            rec.update(control=args.control, **({"donors": cfg.transplant.donors}
                                                if args.control == "shuffled-kv" else {}))
        results.append(rec)
        shown = {k: v for k, v in rec.items() if "/" in k}
        print(f"{split}{f' ({control})' if control else ''}: "
              + "  ".join(f"{k.split('/')[1]}={v:.4f}" if isinstance(v, float) else f"{k.split('/')[1]}={v}"
                          for k, v in shown.items()))
        try:
            rows = [by_id[i] for i in pred["row_id"]]
            print(f"   {format_baselines(run_baselines(run, rows, None if args.data else session.records))}")
        except (UserError, OSError, KeyError) as exc:
            print(f"   baselines: not computed ({exc})")
    out = run / f"{stem}.json"
    rundir.atomic_write_text(out, json.dumps(results, indent=1))
    print(f"written {out} and its predictions ({stem}-<split>.csv)")
    return 0
