"""`cot-transplant data ...`: validate, stats, mask, synth, from-solutions, convert.

Only the standard library is imported here; the data modules load inside the handlers.
"""

from __future__ import annotations

from cot_transplant.commands import positive_int

import os

import argparse
import json

MAX_WARNINGS_SHOWN = 20


def register(sub) -> None:
    data = sub.add_parser("data", help="check, summarize, mask, synthesize and convert dataset files")
    cmds = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=type(data))
    data.set_defaults(func=lambda args: _help(data))

    p = cmds.add_parser("validate", help="check a dataset file; one line per problem, exit 1 if any")
    p.add_argument("file")
    p.add_argument("--max-field-chars", type=positive_int, default=None, metavar="N",
                   help="longest allowed field (default 100,000 characters)")
    p.add_argument("--pairs", action="store_true", help="accept a pairs file (no choice columns), as choice generation does")
    p.set_defaults(func=run_validate)

    p = cmds.add_parser("stats", help="rows, argument accuracy (base rate), order balance, error histograms, token lengths")
    p.add_argument("file")
    p.add_argument("--tokenizer", default=None, metavar="M", help="tokenizer of this model (default: the bundled SmolLM2)")
    p.add_argument("--no-tokens", action="store_true", help="skip token lengths (no tokenizer load)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--skip-invalid", action="store_true", help="skip rows that break a rule instead of stopping")
    p.set_defaults(func=run_stats)

    p = cmds.add_parser("mask", help="the masked variant: candidate identifiers in choice arguments replaced by _")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output file (.csv, .jsonl or .parquet)")
    p.add_argument("--skip-invalid", action="store_true", help="skip rows that break a rule instead of stopping")
    p.set_defaults(func=run_mask)

    p = cmds.add_parser("synth", help="synthetic word problems with a controlled error in the incorrect solution")
    p.add_argument("--n", type=positive_int, required=True, help="number of rows")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes")
    p.add_argument("--out", required=True, help="output file (.csv, .jsonl or .parquet)")
    p.add_argument("--steps", type=_int_list, default=(2, 3, 4, 5), metavar="2,3",
                   help="allowed solution lengths, from 2-5 (default all)")
    p.add_argument("--error-kind", default="mix", metavar="K",
                   help="arithmetic, wrong-operation, dropped-quantity, misread-number, unit-rate, a comma list, or mix")
    p.add_argument("--error-step", default="random", metavar="S",
                   help="first, last, middle (step ceil(n/2), 3+ steps) or random (default)")
    p.add_argument("--argument-accuracy", type=float, default=0.594, metavar="P",
                   help="probability the choice argument picks the correct candidate (default 0.594, the original)")
    p.add_argument("--number-range", type=_range, default=(2, 60), metavar="LO,HI",
                   help="range of the numbers a problem draws (default 2,60)")
    p.add_argument("--short", action="store_true", help="compact questions and bare-equation solutions, for fast CPU demos")
    p.add_argument("--planted", action="store_true",
                   help="the positive control: one solution twice, its verdict readable from the arguer's states only "
                        "(data/plant.py); the choice argument then picks at --argument-accuracy without reasons")
    p.set_defaults(func=run_synth)

    p = cmds.add_parser("from-solutions", help="pairs from OpenAI's released GSM8K model solutions")
    p.add_argument("file", help="example_model_solutions.jsonl")
    p.add_argument("--out", required=True, help="output file (.csv, .jsonl or .parquet)")
    p.add_argument("--choices", default="synthetic", choices=("synthetic", "none"),
                   help="add synthetic choice arguments (default) or write a pairs file")
    p.add_argument("--correct", default="model", choices=("model", "auto", "ground-truth"),
                   help="correct solution: a correct model solution only (default: both sides model-written); "
                        "a correct model solution, else the ground truth (auto); or always the ground truth")
    p.add_argument("--gold", default=None, metavar="FILE",
                   help="GSM8K question file (test.jsonl) giving the ground-truth solutions; default: the file's ground_truth")
    p.add_argument("--argument-accuracy", type=float, default=0.594, metavar="P",
                   help="probability a synthetic choice argument picks the correct candidate")
    p.add_argument("--keep-annotations", action="store_true", help="keep the <<...>> calculator annotations")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_from_solutions)

    p = cmds.add_parser("convert", help="rewrite a dataset in another format (.csv, .jsonl, .parquet)")
    p.add_argument("file")
    p.add_argument("out")
    p.add_argument("--skip-invalid", action="store_true", help="skip rows that break a rule instead of stopping")
    p.set_defaults(func=run_convert)


def _help(parser) -> int:
    parser.print_help()
    return 2




def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': give whole numbers separated by commas, e.g. 2,3") from None


def _range(text: str) -> tuple[int, int]:
    parts = text.replace("-", ",").split(",")
    try:
        lo, hi = (int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': give LO,HI, e.g. 2,60") from None
    return lo, hi


def _check_out(path: str) -> None:
    """Refuse an unknown output format before any work is done."""
    from cot_transplant.data.formats import FileProblem, format_of
    from cot_transplant.errors import UserError

    try:
        format_of(path)
    except FileProblem as exc:
        raise UserError(f"{path}: {exc}") from None


def run_validate(args) -> int:
    from cot_transplant.data.validate import DEFAULT_MAX_FIELD_CHARS, PAIRS_HINT, check_file

    limit = args.max_field_chars or DEFAULT_MAX_FIELD_CHARS
    from cot_transplant.errors import UserError

    if not os.path.exists(args.file):  # a mistake in what was typed, not a problem in a file
        raise UserError(f"{args.file}: no such file; give a .csv, .jsonl or .parquet file")
    if os.path.isdir(args.file):
        raise UserError(f"{args.file}: is a directory; give a .csv, .jsonl or .parquet file")
    report = check_file(args.file, require_choice=not args.pairs, max_field_chars=limit)
    for problem in report.problems:
        hint = "; or check it as a pairs file with --pairs" if PAIRS_HINT in problem.message else ""
        print(f"{problem}{hint}")
    for warning in report.warnings[:MAX_WARNINGS_SHOWN]:
        print(warning)
    if len(report.warnings) > MAX_WARNINGS_SHOWN:
        print(f"{args.file}: ... and {len(report.warnings) - MAX_WARNINGS_SHOWN} more warnings")
    if report.problems:
        if not report.fatal:
            n, rows = len(report.problems), len(report.bad_rows)
            print(f"{args.file}: invalid: {n} problem{'s' * (n > 1)} in {rows} row{'s' * (rows > 1)} "
                  f"of {report.rows}")
        return 1
    extra = report.extra_columns
    extra_text = f", extra columns: {', '.join(extra)}" if extra else ""
    warn = f", {len(report.warnings)} warning{'s' * (len(report.warnings) > 1)}" if report.warnings else ""
    print(f"{args.file}: valid: {report.rows} rows, kind: {report.kind}{extra_text}{warn}")
    return 0


def run_stats(args) -> int:
    from cot_transplant.data.io import read_records
    from cot_transplant.data.stats import dataset_stats, format_stats, token_lengths

    records = read_records(args.file, require_choice=False, skip_invalid=args.skip_invalid)
    stats = dataset_stats(records)
    if not args.no_tokens:
        from cot_transplant.models import load_tokenizer

        stats["tokenizer"] = args.tokenizer or "smollm2"
        stats["tokens"] = token_lengths(records, load_tokenizer(args.tokenizer))
    if args.json:
        print(json.dumps({"file": args.file, **stats}, indent=1))
    else:
        print("\n".join(format_stats(args.file, stats)))
    return 0


def run_mask(args) -> int:
    from cot_transplant.data.io import read_records, write_records
    from cot_transplant.data.mask import mask_record, reveals_choice

    _check_out(args.out)
    records = read_records(args.file, require_choice=True, skip_invalid=args.skip_invalid)
    masked = [mask_record(r) for r in records]
    changed = sum(m.choice_argument != r.choice_argument for m, r in zip(masked, records))
    reveal = sum(reveals_choice(m) for m in masked)
    write_records(masked, args.out)
    n = len(records)
    print(f"{args.out}: {n} rows; {changed} choice arguments changed; {reveal} ({100 * reveal / n:.1f}%) still "
          "reveal the choice another way (a leftover identifier, or quoting one candidate's final number)")
    return 0


def run_synth(args) -> int:
    from cot_transplant.data.io import write_records
    from cot_transplant.data.stats import dataset_stats
    from cot_transplant.data.synth import synthesize

    _check_out(args.out)
    records = synthesize(args.n, args.seed, steps=args.steps, error_kind=args.error_kind, error_step=args.error_step,
                         argument_accuracy=args.argument_accuracy, number_range=tuple(args.number_range),
                         short=args.short)
    if args.planted:
        from cot_transplant.data.plant import plant_all

        records = plant_all(records, args.seed, args.argument_accuracy)
    write_records(records, args.out)
    stats = dataset_stats(records)
    kinds = ", ".join(f"{k} {v}" for k, v in stats["histograms"]["error_kind"].items())
    print(f"{args.out}: {len(records)} rows (seed {args.seed}), argument accuracy "
          f"{100 * stats['argument_accuracy']:.1f}%, error kinds: {kinds}")
    return 0


def run_from_solutions(args) -> int:
    from cot_transplant.data.io import write_records
    from cot_transplant.data.solutions import pairs_from_solutions, source_counts
    from cot_transplant.provenance import stamp

    _check_out(args.out)
    records, counts = pairs_from_solutions(args.file, seed=args.seed, choices=args.choices, correct=args.correct,
                                           argument_accuracy=args.argument_accuracy, gold=args.gold,
                                           keep_annotations=args.keep_annotations)
    write_records(records, args.out)
    kind = "pairs" if args.choices == "none" else "full"
    print(f"{args.out}: {len(records)} rows ({kind}); " + "; ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    sources = source_counts(records)
    for side, by_name in sources.items():
        print(f"{args.out}: {side.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in by_name.items()))
    sidecar = f"{args.out}.counts.json"
    with open(sidecar, "w", encoding="utf-8") as f:
        json.dump({"file": os.path.basename(args.out), "pairs": len(records), "correct": args.correct,
                   **sources, "counts": dict(sorted(counts.items())), "_provenance": stamp()}, f, indent=1)
    print(f"{args.out}: counts written to {sidecar}")
    return 0


def run_convert(args) -> int:
    from cot_transplant.data.io import read_records, write_records

    _check_out(args.out)
    records = read_records(args.file, require_choice=False, skip_invalid=args.skip_invalid)
    write_records(records, args.out)
    print(f"{args.out}: {len(records)} rows")
    return 0
