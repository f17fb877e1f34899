"""`cot-transplant sweep`: seeds x grid trained (`train.sweep`), then aggregated (`analysis.sweep`)."""

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
    from cot_transplant.analysis.run_summary import report_run
    from cot_transplant.analysis.sweep import RESULT, aggregate
    from cot_transplant.errors import UserError
    from cot_transplant.train import sweep

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
        sweep_dir = sweep.make_plan(args.config, args.seeds, sweep.parse_grid(args.grid), args.overrides,
                                    out=args.out, compare=compare, n_perm=args.n_perm)
    plan = sweep.read_plan(sweep_dir)
    print(f"sweep {sweep_dir}: {len(plan['combinations'])} combination(s) x {len(plan['seeds'])} seed(s) = "
          f"{len(plan['runs'])} runs (plan in {sweep_dir / sweep.PLAN})")
    if args.dry_run:
        for run in plan["runs"]:
            print(f"   {run['name']}: {plan['combinations'][run['combination']]['label']}, seed {run['seed']}")
        print(f"start it with `cot-transplant sweep --resume {sweep_dir}`")
        return 0
    failed, interrupted = sweep.run_sweep(sweep_dir, report=report_run)
    result = aggregate(sweep_dir, plan, failed, interrupted)
    print(format_result(result))
    print(f"written {sweep_dir / RESULT}")
    return 130 if result["interrupted"] else 1 if result["failed"] else 0


def _p(test: dict, key: str = "p_value") -> str:
    return "n/a" if test.get(key) is None else f"{test[key]:.3g} (n={test['n']})"


def format_result(result: dict) -> str:
    """A short text table of sweep.json for the terminal: intervals as `analysis.sweep.interval_text`, the primary test
    (raw and Holm-adjusted p) before the secondary ones."""
    from cot_transplant.analysis.sweep import interval_text

    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"== sweep {result['sweep']}: seeds {result['seeds']}; same split in every run: "
             f"{result['split']['same_split']}"]
    for c in result["combinations"]:
        above = c["above_base_rate"]["at_chosen"]
        lines.append(f"   {c['label']}: {c['n_complete']}/{c['n_runs']} runs; test f_c at chosen "
                     f"{interval_text(c['test_at_chosen']['f_c'], pct)}, at end "
                     f"{interval_text(c['test_at_end']['f_c'], pct)}; above base rate {above['runs']}/{above['of']}")
        b = c.get("baselines")
        if b:
            lines.append(f"      baselines on the same {b['n']} test rows: argument {pct(b['argument'])}, length-only "
                         f"{pct(b['length_only'])}, last-step checker {pct(b['last_step_checker'])}")
    if result["comparisons"]:
        lines.append(f"   primary test: paired permutation test on per-row means over seeds, Holm-adjusted across "
                     f"{len(result['comparisons'])} comparison(s); the per-seed and concatenated tests are secondary")
    for cmp in result["comparisons"]:
        fixed = f" ({', '.join(f'{k}={v}' for k, v in cmp['fixed'].items())})" if cmp["fixed"] else ""
        primary = cmp["row_means"]
        secondary = [f"seed {s['seed']} p={_p(s)}" for s in cmp["per_seed"]]
        secondary.append(f"all seeds' rows concatenated p={_p(cmp['concatenated'])}")
        lines.append(f"   {cmp['a']} vs {cmp['b']}{fixed}: primary (per-row means over seeds) diff "
                     f"{pct(primary['diff'])}, p={_p(primary)}, Holm p={_p(primary, 'p_holm')}; "
                     f"secondary: " + "; ".join(secondary))
    if result["incomplete"]:
        lines.append(f"   incomplete: {', '.join(result['incomplete'])}")
    return "\n".join(lines)
