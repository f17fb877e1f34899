"""`cot-transplant sweep`: seeds x grid trained (`train.sweep_runner`), then aggregated (`analysis.sweep_aggregate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cot_transplant.commands import positive_int


def _intermixed(parser: argparse.ArgumentParser) -> None:
    """Let positionals follow options (`CONFIG --seeds 3 key=value`).

    Plain argparse fills the positionals at their first run and rejects later ones;
    `parse_known_intermixed_args` does not, but calls `parse_known_args` itself, hence the flag.
    """
    class Intermixed(type(parser)):
        _inside = False

        def parse_known_args(self, args=None, namespace=None):
            if self._inside:
                return super().parse_known_args(args, namespace)
            self._inside = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inside = False

    parser.__class__ = Intermixed


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="train N seeds x a grid of config values on one split, then aggregate (sweep.json)",
        description="Train every combination of --grid values for N seeds (counted from the config's seed), each "
                    "in its own run directory under one sweep directory, all on the same data split; then write "
                    "sweep.json (test f_c at the validation-chosen checkpoint and at the end: mean and 95% t "
                    "interval across 3+ seeds, else the per-seed values and their range; bands; share of runs above "
                    "the base rate; a paired permutation test of two variants on per-row means, Holm-adjusted "
                    "across grid settings) and band plots. Invoke with --resume DIR to continue: complete runs are "
                    "skipped, interrupted ones resumed from their checkpoint.")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.max_samples=512")
    p.add_argument("--seeds", type=positive_int, metavar="N", help="training seeds per combination")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeat for more keys), e.g. --grid variant=joint,text-only "
                        "--grid train.optim.lr=1e-4,3e-4; lists as transplant.layers=[0,1],[2]")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default runs/sweep-<config stem>-<time>)")
    p.add_argument("--compare", metavar="A,B",
                   help="two variants of the grid to test against each other (default joint,text-only when both "
                        "are in the grid)")
    p.add_argument("--n-perm", type=positive_int, default=10_000, metavar="N",
                   help="random sign patterns per permutation test (default 10000; exact when fewer rows differ)")
    p.add_argument("--resume", metavar="DIR", help="continue (or re-aggregate) the sweep in DIR")
    p.add_argument("--dry-run", action="store_true", help="write sweep.yaml and list the runs; train nothing")
    p.set_defaults(func=run_sweep_command)
    _intermixed(p)


def run_sweep_command(args) -> int:
    from cot_transplant.analysis.end_of_run import report_run
    from cot_transplant.analysis.sweep_aggregate import RESULT, aggregate, format_result
    from cot_transplant.errors import UserError
    from cot_transplant.train import sweep_runner

    if args.resume:
        if args.config or args.grid or args.seeds or args.out or args.compare or args.overrides:
            raise UserError("--resume continues the plan in DIR/sweep.yaml; give no CONFIG, overrides or other options")
        sweep_dir = Path(args.resume)
        if not sweep_dir.is_dir():
            raise UserError(f"{sweep_dir}: sweep directory not found")
    else:
        if not args.config:
            raise UserError("sweep needs a CONFIG file (e.g. configs/demo.yaml) or --resume DIR")
        if args.seeds is None:
            raise UserError("sweep needs --seeds N (training seeds per combination)")
        compare = [v.strip() for v in args.compare.split(",")] if args.compare else None
        sweep_dir = sweep_runner.make_plan(args.config, args.seeds, sweep_runner.parse_grid(args.grid),
                                           args.overrides, out=args.out, compare=compare, n_perm=args.n_perm)
    plan = sweep_runner.read_plan(sweep_dir)
    print(f"sweep {sweep_dir}: {len(plan['combinations'])} combination(s) x {len(plan['seeds'])} seed(s) = "
          f"{len(plan['runs'])} runs (plan in {sweep_dir / sweep_runner.PLAN})")
    if args.dry_run:
        for run in plan["runs"]:
            print(f"   {run['name']}: {plan['combinations'][run['combination']]['label']}, seed {run['seed']}")
        print(f"start it with `cot-transplant sweep --resume {sweep_dir}`")
        return 0
    failed, interrupted = sweep_runner.run_sweep(sweep_dir, report=report_run)
    result = aggregate(sweep_dir, plan, failed, interrupted)
    print(format_result(result))
    print(f"written {sweep_dir / RESULT}")
    return 130 if result["interrupted"] else 1 if result["failed"] else 0
