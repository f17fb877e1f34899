"""`cot-transplant report`: one self-contained page from run and sweep directories.

Sections, always in this order and always present (one that lacks its inputs says so):
configuration, data, results (variants x metrics with CIs and permutation tests), curves with CI
bands, truncation, probes, the confound breakdown, and the original study's published test curves
as a labelled reference. Everything is read from files the other commands wrote; nothing trains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cot_transplant.analysis.report_render import Section
from cot_transplant.analysis.report_sections import (REFERENCE_CSV, ReportInput, breakdown_section,
                                                     configuration_section, curves_section, data_section,
                                                     probes_section, reference_section, results_section,
                                                     truncation_section)
from cot_transplant.errors import UserError

SECTIONS = ("Configuration", "Data", "Results", "Curves", "Truncation", "Probes", "Confound breakdown",
            "Original study (reference)")
FORMATS = ("html", "md")


def load_source(path: Path) -> ReportInput:
    """A sweep (sweep.json) or run (config.yaml) directory. Raises UserError for anything else."""
    from cot_transplant.analysis.plots import run_label

    path = Path(path)
    if (path / "sweep.json").is_file():
        sweep = json.loads((path / "sweep.json").read_text(encoding="utf-8"))
        runs = [(c["label"], path / r["name"]) for c in sweep["combinations"] for r in c["runs"]
                if r["status"] == "complete" and (path / r["name"] / "config.yaml").is_file()]
        return ReportInput("sweep", path, path.name, runs, sweep)
    if (path / "sweep.yaml").is_file():
        raise UserError(f"{path}: a sweep without sweep.json; aggregate it with `cot-transplant sweep --resume {path}`")
    if (path / "config.yaml").is_file():
        return ReportInput("run", path, run_label(path), [(run_label(path), path)])
    raise UserError(f"{path}: neither a run directory (config.yaml) nor a sweep directory (sweep.json)")


def default_reference() -> Path | None:
    """../shared/seed-data/seed_test_curves.csv beside the working directory or this checkout, when present."""
    for root in (Path.cwd().parent, Path(__file__).resolve().parents[3]):
        if (root / REFERENCE_CSV).is_file():
            return root / REFERENCE_CSV
    return None


def find_probes(sources: list[ReportInput], probe: Path | None) -> list[Path]:
    """probe.json files: `probe` (a file or a directory holding one), else any in or under the inputs."""
    if probe is not None:
        path = Path(probe) / "probe.json" if Path(probe).is_dir() else Path(probe)
        if not path.is_file():
            raise UserError(f"{probe}: no probe.json; give --probe the --out directory of `cot-transplant probe`")
        return [path]
    dirs = [src.path for src in sources] + [run for src in sources for _, run in src.runs]
    found = [d / name for d in dirs for name in ("probe.json", "probe/probe.json") if (d / name).is_file()]
    return list(dict.fromkeys(found))


# --- the report -------------------------------------------------------------------------------------


def build_report(paths: list[Path], probe: Path | None = None, reference: Path | None = None
                 ) -> tuple[str, list[str], list[Section]]:
    """(title, meta lines, sections) of a report on `paths` (run and sweep directories).

    Raises:
        UserError: an input that is neither a run nor an aggregated sweep; a given --probe or
            --reference that cannot be read.
    """
    from cot_transplant.provenance import stamp

    if not paths:
        raise UserError("report: give at least one RUN or SWEEP directory")
    sources = [load_source(Path(p)) for p in paths]
    ref_path = Path(reference) if reference is not None else default_reference()
    ref_section, curves = reference_section(ref_path, explicit=reference is not None)
    cache: dict = {}  # the runs' rows, by data config
    sections = [configuration_section(sources), data_section(sources, cache), results_section(sources),
                curves_section(sources, curves), truncation_section(sources),
                probes_section(find_probes(sources, probe)), breakdown_section(sources, cache), ref_section]
    prov = stamp()
    meta = [f"inputs: {', '.join(str(s.path) for s in sources)}",
            f"generated {time.strftime('%Y-%m-%d %H:%M:%S')} by cot-transplant {prov['version']} (git {prov['git']})"]
    return f"cot-transplant report: {', '.join(s.label for s in sources)}", meta, sections


def write_report(paths: list[Path], out: Path, fmt: str = "html", probe: Path | None = None,
                 reference: Path | None = None) -> Path:
    """Build the report and write it to `out` (HTML, one file; or Markdown with a folder of figures)."""
    from cot_transplant.analysis.report_render import render_html, render_markdown
    from cot_transplant.runs.rundir import atomic_write_text

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    title, meta, sections = build_report(paths, probe, reference)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(title, meta, sections) if fmt == "html" else render_markdown(title, meta, sections, out)
    atomic_write_text(out, text)
    return out
