"""`cot-transplant demo`: synthetic data -> joint and text-only on one split -> curves and a side-by-side summary."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the bundled model in minutes (CPU)",
                       description="Generate synthetic rows, train `joint` and `text-only` on the same split "
                                   "with the bundled SmolLM2, then plot and summarize both.")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_samples=32 model.name=tiny-llama")
    p.add_argument("--out", default="runs", help="parent directory of the demo's run directories (default ./runs)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cot_transplant.analysis.demo import run_demo

    run_demo(args.overrides, args.out)
    return 0
