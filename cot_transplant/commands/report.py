"""`cot-transplant probe` (linear probes on the arguer's states), `breakdown` (a run's accuracy by row
metadata) and `report` (one self-contained HTML page from runs and sweeps)."""

from __future__ import annotations

from pathlib import Path

from cot_transplant.commands import positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "probe", help="linear probes with nested CV: is an argument's correctness readable from the arguer's states?",
        description="Run the base model (no adapters) over each row's correct and incorrect argument after the "
                    "arguer prompt, once (the states are kept in DIR/features as float16 and reused by later "
                    "runs on the same data and model); per feature set (hidden state mean and last token, K/V "
                    "mean) fit ridge probes of correct vs incorrect. Outer folds are grouped by question; inside "
                    "each outer training part the layer and penalty are chosen by inner CV, and the outer fold "
                    "scores the choice: pairwise accuracy (the correct argument scored above its row's incorrect "
                    "one, comparable with f_c) with a Wilson interval, and AUROC. A permutation null flips labels "
                    "within each row and reruns the whole procedure. Baselines on the same folds: the layer-0 "
                    "probe, the argument's length and its TF-IDF words. Writes DIR/probe.json and DIR/probe.png.")
    p.add_argument("--data", required=True, metavar="FILE", help="dataset (.csv original format, .jsonl, .parquet; "
                                                                  "pairs files are fine, e.g. from `data "
                                                                  "from-solutions --choices none`)")
    p.add_argument("--model", default=None, metavar="M", help="model spec (default: the bundled smollm2)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/probe-<data stem>)")
    p.add_argument("--rows", type=positive_int, default=None, metavar="N", help="first N rows (default: all)")
    p.add_argument("--folds", type=positive_int, default=5, metavar="K",
                   help="outer cross-validation folds, at least 3 (default 5); the inner CV uses the other K-1")
    p.add_argument("--permutations", type=positive_int, default=200, metavar="P",
                   help="within-pair label flips for the null (default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the label flips (default 0)")
    p.add_argument("--template", default="alpaca-json", choices=["alpaca-json", "chat"],
                   help="arguer prompt template (default alpaca-json)")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="prompts per forward (default 8)")
    p.set_defaults(func=run_probe_command)

    b = sub.add_parser(
        "breakdown", help="a run's test/val accuracy by error kind, error step, steps and argument correctness",
        description="Join a run's predictions with its rows' metadata (rebuilt from the run's config) and write "
                    "RUN/breakdown.json: f_c with a 95% Wilson interval per error kind, error step, number of steps, "
                    "error-in-last-step and argument-right group, and on synthetic rows the accuracy of a last-step "
                    "checker (recomputes only each candidate's last arithmetic step) as a reference.")
    b.add_argument("run", type=Path, metavar="RUN", help="run directory")
    b.add_argument("--checkpoint-samples", type=int, default=None, metavar="N",
                   help="the evaluation after N samples (default: the checkpoint chosen on validation)")
    b.set_defaults(func=run_breakdown_command)

    r = sub.add_parser(
        "report", help="one self-contained HTML (or Markdown) report of runs and sweeps",
        description="Config, data statistics, variants x metrics with CIs and permutation tests, curves with CI "
                    "bands, the truncation curve, probes, the confound breakdown, and the original study's "
                    "published test curves as a labelled reference, in one HTML file that opens offline (figures "
                    "embedded). A section whose inputs are missing says so.")
    r.add_argument("inputs", nargs="+", type=Path, metavar="RUN_OR_SWEEP", help="run or sweep directories")
    r.add_argument("--out", type=Path, default=None, help="file to write (default report.html, or report.md)")
    r.add_argument("--format", choices=["html", "md"], default=None,
                   help="html (default; one self-contained file) or md (figures in a folder beside it); "
                        "default: from --out's suffix")
    r.add_argument("--probe", type=Path, default=None, metavar="DIR",
                   help="probe results (the --out of `cot-transplant probe`); default: any probe.json in the inputs")
    r.add_argument("--reference", type=Path, default=None, metavar="CSV",
                   help="published curves laid out like seed-data/seed_test_curves.csv "
                        "(default ../shared/seed-data/seed_test_curves.csv when present)")
    r.set_defaults(func=run_report_command)


def run_probe_command(args) -> int:
    from cot_transplant.analysis.probe_report import format_probes
    from cot_transplant.analysis.probes import run_probes
    from cot_transplant.errors import UserError

    data = Path(args.data)
    if not data.is_file():
        raise UserError(f"{data}: no such file; give --data a dataset (.csv, .jsonl or .parquet)")
    out = Path(args.out) if args.out else Path("runs") / f"probe-{data.stem}"
    result = run_probes(data, out, model_name=args.model, rows=args.rows, folds=args.folds,
                        template_name=args.template, batch_size=args.batch_size, permutations=args.permutations,
                        seed=args.seed)
    print(format_probes(result))
    print(f"written {out / 'probe.json'}, probe.png")
    return 0


def run_breakdown_command(args) -> int:
    from cot_transplant.analysis.baselines import format_baselines
    from cot_transplant.analysis.breakdown import RESULT, breakdown, format_breakdown, run_records
    from cot_transplant.analysis.end_of_run import prediction_baselines
    from cot_transplant.errors import UserError

    if not args.run.is_dir():
        raise UserError(f"{args.run}: run directory not found")
    result = breakdown(args.run, args.checkpoint_samples)
    print(format_breakdown(result))
    records = run_records(args.run)
    for split, s in result["splits"].items():
        print(f"   {split} {format_baselines(prediction_baselines(args.run, s['predictions'], records))}")
    print(f"written {args.run / RESULT}")
    return 0


def run_report_command(args) -> int:
    from cot_transplant.analysis.report import write_report
    from cot_transplant.errors import UserError

    fmt = args.format or ("md" if args.out is not None and args.out.suffix.lower() == ".md" else "html")
    out = args.out or Path(f"report.{fmt}")
    for path in args.inputs:
        if not path.is_dir():
            raise UserError(f"{path}: not a directory; give run or sweep directories")
    try:
        written = write_report(args.inputs, out, fmt=fmt, probe=args.probe, reference=args.reference)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the report ({exc.strerror or exc}); choose another --out") from None
    print(written)
    return 0
