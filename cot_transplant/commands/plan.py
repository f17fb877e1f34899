"""`cot-transplant plan`: a config's memory, FLOPs and time per process, and whether it fits a GPU, from the
model's config.json alone (no weights, no GPU)."""

from __future__ import annotations

import sys

from cot_transplant.commands import write_json


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="memory, FLOPs, time and GPU fit of a config, traced on the meta device (no weights, no GPU)",
        description="Build the config's model from its config.json on the meta device, trace one training step and "
                    "one evaluation of the fast path and of the reference step there (a device, dtype or shape error "
                    "of the step shows as on a GPU), and print per process: parameters, the weights' memory by dtype "
                    "or quantization, adapters, gradients and AdamW states, the activations of the longest "
                    "sub-batch with and without gradient checkpointing, FLOPs per step, sample and epoch, the wall "
                    "time per epoch at --tflops, and whether one 24, 48 and 80 GiB GPU fits.")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch_size=1 model.load_in_4bit=true")
    p.add_argument("--model-config", metavar="PATH",
                   help="the model's config.json (or its directory) when model.name is not here, e.g. "
                        "../shared/model-shapes/llama-7b/config.json")
    p.add_argument("--tflops", type=_positive_float, default=100.0, metavar="X",
                   help="achieved TFLOP/s the wall times assume (default 100: about 32%% of an A100's bf16 peak)")
    p.add_argument("--json", metavar="FILE", help="also write every figure (bytes, FLOPs, seconds) as JSON here")
    p.set_defaults(func=run)


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def run(args) -> int:

    from cot_transplant.bench.plan import PlanOptions, plan
    from cot_transplant.bench.plan_report import format_plan
    from cot_transplant.bench.trace import TraceError

    try:
        result = plan(PlanOptions(args.config, tuple(args.overrides), args.model_config, args.tflops))
    except TraceError as exc:
        print(f"cot-transplant: plan: {exc}", file=sys.stderr)
        return 1
    print(format_plan(result))
    if args.json:
        write_json(args.json, result)
    return 0
