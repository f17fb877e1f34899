"""CLI subcommands. Each module imports only the standard library at top level."""

import argparse
import json
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def write_json(path: str, record: dict) -> None:
    """`--json FILE`: write `record` as indented JSON at `path` (its folder made) and print where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"written {out}")
