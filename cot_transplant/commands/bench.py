"""`cot-transplant bench`: train-step and eval throughput of the step paths, FLOP/s, memory."""

from __future__ import annotations

from cot_transplant.commands import positive_int, write_json


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="time the step paths side by side (samples/s, FLOP/s, eval rows/s, memory)",
        description="Run the original-style step, the reference step and a plain LoRA step (and any "
                    "registered path) on the same rows, interleaved in one process, after warm-up; print "
                    "medians, achieved FLOP/s against a 2048x2048 fp32 matmul timed alongside, and ratios.")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. prompt.template=chat lora.r=8")
    p.add_argument("--quick", action="store_true",
                   help="1 row, 3 measured rounds after 1 warm-up, the compact chat template, one source "
                        "(the --data rows if given, else synthetic ones): under 3 minutes on 2 free CPU cores")
    p.add_argument("--data", metavar="PATH", help="also measure a seeded sample of this data file's rows")
    p.add_argument("--rows", type=positive_int, metavar="N", help="rows per source (default 4; --quick 2)")
    p.add_argument("--repeats", type=positive_int, metavar="R", help="measured rounds (default 5; --quick 3)")
    p.add_argument("--warmup", type=int, metavar="W", help="untimed warm-up rounds, which also take the memory peaks (default 1)")
    p.add_argument("--model", default="smollm2", metavar="M", help="model spec (default: the bundled smollm2)")
    p.add_argument("--paths", metavar="A,B", help="comma-separated step paths (default: all registered)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic rows (needs --data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the row sample (default 0)")
    p.add_argument("--json", metavar="OUT", help="also write the full result record here")
    p.set_defaults(func=run)


def run(args) -> int:

    from cot_transplant.bench.report import format_report
    from cot_transplant.bench.runner import QUICK, QUICK_OVERRIDES, BenchOptions, run_bench
    from cot_transplant.errors import UserError

    if args.no_synthetic and not args.data:
        raise UserError("bench: --no-synthetic leaves nothing to measure; give --data PATH")
    defaults = QUICK if args.quick else {}
    # Later overrides win, so the user's own come after the quick ones.
    overrides = [*(QUICK_OVERRIDES if args.quick else ()), *args.overrides]
    given = {k: v for k, v in (("rows", args.rows), ("repeats", args.repeats), ("warmup", args.warmup))
             if v is not None}
    # --quick measures one source: the data file's rows when given.
    synthetic = not args.no_synthetic and not (args.quick and args.data)
    opts = BenchOptions(model=args.model, data=args.data, seed=args.seed, synthetic=synthetic,
                        paths=tuple(x for x in (args.paths or "").split(",") if x),
                        overrides=tuple(overrides), **{**defaults, **given})
    result = run_bench(opts)
    print(format_report(result))
    if args.json:
        write_json(args.json, result)
    return 0
