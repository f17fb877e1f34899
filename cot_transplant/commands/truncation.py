"""`cot-transplant truncation`: a trained run evaluated transplanting only the first fraction of each argument."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "truncation", help="evaluate a trained run transplanting only the first fraction of each argument",
        description="Without retraining: load a checkpoint and evaluate one split once per fraction, "
                    "transplanting only the first fraction of each argument's states. Writes RUN/truncation.json "
                    "(per fraction: f_c with 95% CI, AUROC, n), RUN/truncation.png and per-fraction predictions.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--fractions", default="0.25,0.5,0.75,1.0", help="comma-separated, in (0, 1] (default %(default)s)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"], help="split to evaluate (default test)")
    p.add_argument("--checkpoint", type=int, metavar="K", help="checkpoint step (default: the latest)")
    p.add_argument("--tail", default="text", choices=["text", "hidden"],
                   help="the tokens past the cut: 'text' the chooser reads them itself (as transplant.fraction in "
                        "training); 'hidden' they are masked out of the chooser's view (default text)")
    p.set_defaults(func=run_truncation_command)


def run_truncation_command(args) -> int:
    from cot_transplant.analysis.truncation import format_truncation, parse_fractions, truncation

    result = truncation(args.run, parse_fractions(args.fractions), split=args.split, checkpoint=args.checkpoint,
                        tail=args.tail)
    print(format_truncation(result))
    print(f"written {Path(result['run']) / 'truncation.json'}, truncation.png")
    return 0
