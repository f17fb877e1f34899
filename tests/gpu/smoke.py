"""The GPU smoke test's device, its skip line, and the header and summary `scripts/gpu-smoke.sh` prints.

One place for each, used by tests/conftest.py (the skip), tests/gpu/test_gpu_smoke.py (the device)
and the script (`python tests/gpu/smoke.py header|skip|summary JUNIT_XML`).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DEVICE_ENV = "COT_TRANSPLANT_SMOKE_DEVICE"
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def smoke_device() -> str:
    """The device the smoke tests run on: `$COT_TRANSPLANT_SMOKE_DEVICE`, default `cuda` (also `cpu`)."""
    return os.environ.get(DEVICE_ENV, "cuda") or "cuda"


def skip_reason() -> str | None:
    """One line saying why the smoke tests cannot run here, or None when their device is present."""
    import torch

    device = smoke_device()
    if device not in ("cuda", "cpu"):
        return f"{DEVICE_ENV}={device}: give cuda or cpu"
    if device == "cpu" or torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda} build, no GPU visible" if torch.version.cuda else "a build without CUDA"
    return (f"no CUDA GPU (torch {torch.__version__}, {build}): the gpu smoke tests skip; "
            f"{DEVICE_ENV}=cpu runs their logic on the CPU")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_hash() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def header_lines() -> list[str]:
    """Versions, git hash and the device(s): the head of the summary."""
    import torch

    versions = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    lines = [f"git {_git_hash()}; python {sys.version.split()[0]}; {versions}",
             f"torch CUDA build: {torch.version.cuda or 'none'}; smoke device: {smoke_device()}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"GPU {i}: {p.name}, {p.total_memory / 2 ** 30:.1f} GiB, compute capability "
                         f"{p.major}.{p.minor}")
    return lines


def _outcome(case: ET.Element) -> tuple[str, str]:
    """('passed' | 'failed' | 'skipped', first line of the message) of one junit <testcase>."""
    for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
        child = case.find(tag)
        if child is not None:
            message = (child.get("message") or child.text or "").strip().splitlines()
            return outcome, message[0][:200] if message else ""
    return "passed", ""


def summary_lines(junit_xml: str | os.PathLike) -> tuple[list[str], int]:
    """(lines, failed count) from pytest's `--junitxml` file: the counts, then one line per failure and skip."""
    root = ET.parse(junit_xml).getroot()
    cases = list(root.iter("testcase"))
    seconds = sum(float(s.get("time", 0)) for s in root.iter("testsuite"))
    results = [(f"{c.get('name')}", *_outcome(c)) for c in cases]
    counts = {k: sum(r[1] == k for r in results) for k in ("passed", "failed", "skipped")}
    lines = [f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped in {seconds:.0f} s"]
    lines += [f"{outcome.upper()} {name}: {message}" for name, outcome, message in results if outcome != "passed"]
    return lines, counts["failed"]


def main(argv: list[str]) -> int:
    """`header`: print the header; `skip`: print the skip line, nothing where the tests can run;
    `summary JUNIT_XML`: print the counts and exit 1 on any failure."""
    if argv[:1] == ["header"]:
        print("\n".join(header_lines()))
        return 0
    if argv[:1] == ["skip"]:
        reason = skip_reason()
        if reason:
            print(f"gpu-smoke: skipped: {reason}")
        return 0
    if argv[:1] == ["summary"] and len(argv) == 2:
        lines, failed = summary_lines(argv[1])
        print("\n".join(lines))
        return 1 if failed else 0
    print("usage: smoke.py header | skip | summary JUNIT_XML", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
