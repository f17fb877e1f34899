"""`cot-transplant train` and `cot-transplant eval`."""

from __future__ import annotations

import os
from pathlib import Path


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
    e.add_argument("--checkpoint", type=int, metavar="K", help="checkpoint step (default: the latest)")
    e.add_argument("--split", action="append", choices=["val", "test", "train"],
                   help="split(s) of the run's data to evaluate (default: the run's eval.splits)")
    e.add_argument("--fraction", type=float, help="transplant only the first fraction of each argument's K/V")
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
        train(cfg, resume=run)
        return 0
    if not args.config:
        raise UserError("train needs a CONFIG file (e.g. configs/demo.yaml) or --resume RUN_DIR")
    cfg = load_config(args.config, args.overrides)
    train(cfg, config_path=args.config)
    return 0


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


def run_eval(args) -> int:
    import dataclasses
    import json

    from cot_transplant.errors import UserError
    from cot_transplant.train import rundir
    from cot_transplant.train.checkpoint import load_checkpoint
    from cot_transplant.train.evaluate import evaluate
    from cot_transplant.train.setup import setup

    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found; give a directory under runs/")
    cfg, _ = rundir.read_run_config(run)
    if args.fraction is not None:
        if not 0 < args.fraction <= 1:
            raise UserError("--fraction must be in (0, 1]")
        cfg = dataclasses.replace(cfg, transplant=dataclasses.replace(cfg.transplant, fraction=args.fraction))
    if args.data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=args.data, split="random",
                                                                val_fraction=0.0, test_fraction=0.0))
    ckpt = (run / "checkpoints" / f"step-{args.checkpoint}") if args.checkpoint is not None else rundir.latest_checkpoint(run)
    if ckpt is None or not (ckpt / "state.json").is_file():
        raise UserError(f"{run}: checkpoint {args.checkpoint if args.checkpoint is not None else '(latest)'} not found; "
                        f"available: {[p.name for p in sorted((run / 'checkpoints').glob('step-*'))]}")
    session = setup(cfg)
    state = load_checkpoint(ckpt, session.model, restore_rng=False)
    splits = ["train"] if args.data else (args.split or cfg.eval.splits)
    results = []
    for split in splits:
        rec = evaluate(session, split, state["cursor"]["samples"], None)
        rec.update(checkpoint=ckpt.name, data=args.data, fraction=cfg.transplant.fraction)
        results.append(rec)
        shown = {k: v for k, v in rec.items() if "/" in k}
        print(f"{split}: " + "  ".join(f"{k.split('/')[1]}={v:.4f}" if isinstance(v, float) else f"{k.split('/')[1]}={v}"
                                       for k, v in shown.items()))
    out = run / f"eval-{ckpt.name}{'-' + Path(args.data).stem if args.data else ''}.json"
    rundir.atomic_write_text(out, json.dumps(results, indent=1))
    print(f"written {out}")
    return 0
