"""`cot-transplant train` and `cot-transplant eval`."""

from __future__ import annotations

from pathlib import Path

CONTROLS = ("swapped-kv", "shuffled-kv", "base-arguer")  # train.evaluate_checkpoint.CONTROLS
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
                   help="eval-only control: swapped-kv (each candidate slot gets the other candidate's K/V) or "
                        "shuffled-kv (another row's, within the split), on a joint or frozen-arguer checkpoint; "
                        "base-arguer (the trained chooser reads the untrained arguer's states), on a joint or "
                        "adversarial checkpoint")
    e.add_argument("--donors", choices=DONORS,
                   help="with --control shuffled-kv: random or length-matched donors (default: the run's "
                        "transplant.donors)")
    e.set_defaults(func=run_eval)


def run_train(args) -> int:
    from cot_transplant.config import load_config
    from cot_transplant.errors import UserError
    from cot_transplant.train.loop import train
    from cot_transplant.train.resume import resume_config

    if args.resume:
        extend = ([args.config] if args.config else []) + list(args.overrides)
        train(resume_config(Path(args.resume), extend), resume=Path(args.resume), report=report)
        return 0
    if not args.config:
        raise UserError("train needs a CONFIG file (e.g. configs/demo.yaml) or --resume RUN_DIR")
    train(load_config(args.config, args.overrides), config_path=args.config, report=report)
    return 0


def report(summary: dict) -> dict:
    """`analysis.end_of_run.report_run` of a finished run's summary (empty on processes other than the main one)."""
    from cot_transplant.analysis.end_of_run import report_run

    return report_run(summary) if summary else summary


def checkpoint_arg(text: str):
    """`--checkpoint`: a step number or 'chosen'."""
    import argparse

    if text == "chosen":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a checkpoint step (e.g. 4) or 'chosen'") from None


def run_eval(args) -> int:
    from cot_transplant.analysis.end_of_run import format_eval
    from cot_transplant.train.evaluate_checkpoint import evaluate_checkpoint

    run = Path(args.run)
    out = evaluate_checkpoint(run, args.checkpoint, data=args.data, splits=args.split, fraction=args.fraction,
                              control=args.control, donors=args.donors,
                              report=lambda *split: print(format_eval(run, *split)))
    print(f"written {out} and its predictions ({out.stem}-<split>.csv)")
    return 0
