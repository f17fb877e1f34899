"""`cot-transplant results`: rewrite the tables of a results document from run directories."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("results", help="rewrite the tables of docs/results.md from run directories",
                       description="Fill every <!-- results:NAME --> block of DOC (campaign-status, decision, positive-series, "
                                   "primary, gsm8k, arg, probe-csv, probe-gsm8k, and the older positive, original) from the runs "
                                   "under DIR, and draw the campaign's figures beside DOC; the prose is kept.")
    p.add_argument("dir", type=Path, metavar="DIR", help="results directory (runs <study>-<variant>-s<seed>, probe-<name>)")
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"), metavar="FILE",
                   help="markdown file with results blocks (default docs/results.md)")
    p.add_argument("--reference", type=Path, default=Path("../shared/seed-data/seed_test_curves.csv"), metavar="CSV",
                   help="the original study's published test curves, drawn beside the campaign's (skipped if absent)")
    p.set_defaults(func=run_results)


def run_results(args) -> int:
    from cot_transplant.analysis.results import fill
    from cot_transplant.errors import UserError
    from cot_transplant.runs.rundir import atomic_write_text

    if not args.dir.is_dir():
        raise UserError(f"{args.dir}: results directory not found; give the directory the runs were written to")
    if not args.doc.is_file():
        raise UserError(f"{args.doc}: document not found; give a markdown file with <!-- results:NAME --> blocks")
    text, filled = fill(args.doc.read_text(encoding="utf-8"), args.dir)
    if not filled:
        raise UserError(f"{args.doc}: no <!-- results:NAME --> ... <!-- /results:NAME --> blocks to fill")
    atomic_write_text(args.doc, text)
    print(f"{args.doc}: rewrote {', '.join(filled)} from {args.dir}")
    if {"primary", "positive-series"} & set(filled):  # the campaign's figures, beside the document
        from cot_transplant.analysis.campaign_figures import curves_figure, positive_figure

        for made in (curves_figure(args.dir, args.doc.parent / "results-curves.png", args.reference),
                     positive_figure(args.dir, args.doc.parent / "results-positive.png")):
            if made is not None:
                print(f"{made}: drawn from {args.dir}")
    return 0
