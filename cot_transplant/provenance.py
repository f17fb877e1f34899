"""Version and git hash stamped on every output."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from pathlib import Path

from cot_transplant import __version__


@functools.lru_cache(maxsize=None)
def git_hash() -> str | None:
    """The git commit of the source checkout this package runs from, or None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("-dirty" if dirty else "")


def stamp() -> dict:
    """Package version, git hash and library versions, for every written output."""
    info = {"package": "cot-transplant", "version": __version__, "git": git_hash(),
            "python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("torch", "transformers", "peft"):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = str(getattr(m, "__version__", None))
    return info
