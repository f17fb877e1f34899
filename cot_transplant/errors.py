"""The one exception type the CLI turns into a single line and exit code 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A mistake in what the user gave (file, config, argument): one clear line, exit 2."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
