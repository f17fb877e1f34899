"""Command-line entry point. Subcommands live in `cot_transplant.commands.*`.

Each command module imports only the standard library at top level and exposes
`register(subparsers)`; heavy imports happen inside the handlers, so `--help`
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from cot_transplant import __version__
from cot_transplant.errors import UserError

COMMAND_MODULES = (
    "cot_transplant.commands.info",
    "cot_transplant.commands.data",
    "cot_transplant.commands.generate",
    "cot_transplant.commands.train",
    "cot_transplant.commands.demo",
    "cot_transplant.commands.plot",
    "cot_transplant.commands.sweep",
    "cot_transplant.commands.truncation",
    "cot_transplant.commands.bench",
    "cot_transplant.commands.plan",
    "cot_transplant.commands.report",
    "cot_transplant.commands.results",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cot-transplant", description="Transplant an arguer model's keys/values into a chooser model and train both.")
    parser.add_argument("--version", action="version", version=f"cot-transplant {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Deprecation notices from transformers/peft internals say nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"cot-transplant: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cot-transplant: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)
