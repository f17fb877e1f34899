"""`cot-transplant plot`: curves figures from run directories."""

from __future__ import annotations

from pathlib import Path

from cot_transplant.commands import positive_int


def register(sub) -> None:
    p = sub.add_parser("plot", help="train/eval curves of one or more runs (from metrics.jsonl)",
                       description="Two panels, train and eval (test split if logged, else val), against "
                                   "samples trained; several runs overlaid.")
    p.add_argument("runs", nargs="+", metavar="RUN", type=Path, help="run directory holding metrics.jsonl")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG to write (default: RUN/curves.png for one run, else ./curves.png)")
    p.add_argument("--smooth", type=positive_int, default=1, metavar="K",
                   help="trailing mean over K points on the train curves (default 1: raw)")
    p.add_argument("--reference", type=Path, default=None, metavar="CSV",
                   help="overlay curves from a CSV laid out like seed-data/seed_test_curves.csv")
    p.add_argument("--title", default=None, help="figure title (default: the run names)")
    p.add_argument("--max-samples", type=positive_int, default=None, metavar="N",
                   help="show only the first N samples trained, the reference's too (default: everything)")
    p.set_defaults(func=run_plot)


def run_plot(args) -> int:
    from cot_transplant.analysis.plots import plot_curves
    from cot_transplant.errors import UserError

    out = args.out or (args.runs[0] / "curves.png" if len(args.runs) == 1 else Path("curves.png"))
    if out.suffix.lower() != ".png":
        raise UserError(f"{out}: --out must name a .png file")
    try:
        written = plot_curves(args.runs, out, smooth=args.smooth, reference_csv=args.reference, title=args.title,
                              max_samples=args.max_samples)
    except OSError as exc:  # reading errors are UserErrors already; this is the write
        raise UserError(f"{out}: cannot write the figure ({exc.strerror or exc}); choose another --out") from None
    print(written)
    return 0
