"""Sweeps: N training seeds x a grid of config values, one run directory each, on one data split.

This module plans and trains a sweep; `analysis.sweep_aggregate` aggregates it (sweep.json, band figures).
Layout of a sweep directory (`runs/sweep-<config stem>-<time>/` by default):
  sweep.yaml         the plan, written before any run: resolved base config, seeds, grid,
                     comparison, and every run's name, seed and grid values
  <run>/             one run directory per (combination, seed); see runs/rundir.py
  sweep.json, *.png  the aggregate and its figures (`analysis.sweep_aggregate`)

The grid may not touch `seed` (use the seed count), `run.*`, or the `data.*` keys that
choose rows or the split (all but `data.mask`): every run of a sweep sees the same rows,
split by `data.split_seed` alone, so test rows pair one to one across runs.
Invoking the sweep again skips complete runs, resumes interrupted runs from their
latest checkpoint and restarts runs that died before their first checkpoint.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cot_transplant.config import Config, apply_overrides, load_config, to_dict, without_removed
from cot_transplant.errors import UserError
from cot_transplant.provenance import stamp

PLAN = "sweep.yaml"
PLAN_VERSION = 1
# Keys a grid may not vary: the seed has its own option, runs are named by the sweep, and data
# keys would change the rows or the split, so test rows would no longer pair across runs.
_FIXED = ("seed", "run.", "data.")
# These change what a row shows (the argument, planted verdicts), never which rows or the split.
_FREE_DATA = ("data.mask", "data.argument", "data.planted_fraction", "data.planted_position", "data.planted_seed")


# --- the plan ---------------------------------------------------------------------------------------


def _split_values(text: str) -> list[str]:
    """Split `v1,v2` on commas outside brackets, so `[0,1],[2]` gives two lists."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


def parse_grid(items: list[str]) -> dict[str, list]:
    """`["variant=joint,text-only", "train.optim.lr=1e-4,3e-4"]` -> {key: [values]} (values parsed as YAML).

    Raises UserError on a malformed item, a repeated key or value, or a key the grid may not vary.
    """
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--grid '{item}': expected key=v1,v2 (e.g. variant=joint,text-only)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key in grid:
            raise UserError(f"--grid: key '{key}' given twice; list all its values in one --grid")
        if key == "seed":
            raise UserError("--grid: 'seed' is set by --seeds N (N seeds counted from the config's seed)")
        if key.startswith(_FIXED) and key not in _FREE_DATA:
            raise UserError(f"--grid: '{key}' cannot vary within a sweep: every run shares one data split and "
                            "the sweep names its runs; set it as an override (key=value) instead")
        values = [apply_overrides({}, [f"v={v.strip()}"])["v"] for v in _split_values(raw)]
        if any(values.count(v) > 1 for v in values):
            raise UserError(f"--grid '{item}': a value is repeated")
        grid[key] = values
    return grid


def _set(values: dict, dotted: str, value: Any) -> None:
    node = values
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _slug(values: dict[str, Any]) -> str:
    """A directory-safe name of one combination: `joint_lr-0.0003` (variant bare, other keys by last part)."""
    if not values:
        return "base"
    parts = []
    for key, value in values.items():
        text = re.sub(r"[^A-Za-z0-9.+-]+", "_", json.dumps(value) if not isinstance(value, str) else value).strip("_")
        parts.append(text if key == "variant" else f"{key.rsplit('.', 1)[-1]}-{text}")
    return "_".join(parts)


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "base"


def make_plan(config_path: str, seeds: int, grid: dict[str, list], overrides: list[str] | None = None,
              out: str | Path | None = None, compare: list[str] | None = None, n_perm: int = 10_000) -> Path:
    """Resolve and check every run's config, then write `sweep.yaml` in a new sweep directory; return it.

    Raises:
        UserError: a bad config, override or grid value (named by key), a bad `compare`, or an
            `out` directory that already holds a sweep or other files.
    """
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    base_cfg = load_config(config_path, overrides or [])
    base = to_dict(base_cfg)
    base["run"].update(name=None, dir=None)
    if compare is None and {"joint", "text-only"} <= set(grid.get("variant", [])):
        compare = ["joint", "text-only"]
    if compare is not None:
        if len(compare) != 2 or compare[0] == compare[1]:
            raise UserError(f"--compare: give two different variants, e.g. joint,text-only; got {','.join(compare)}")
        missing = [v for v in compare if v not in grid.get("variant", [])]
        if missing:
            raise UserError(f"--compare: {', '.join(missing)} not in the grid; add --grid variant={','.join(compare)}")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    slugs = [_slug(c) for c in combos]
    if len(set(slugs)) < len(slugs):
        slugs = [f"c{i}-{s}" for i, s in enumerate(slugs)]
    seed_list = [base_cfg.seed + i for i in range(seeds)]
    runs = [{"name": f"{slugs[c]}-s{seed}", "combination": c, "seed": seed}
            for seed in seed_list for c in range(len(combos))]  # seed-major: early pairs complete early
    plan = {"plan_version": PLAN_VERSION, "config": str(config_path), "overrides": list(overrides or []),
            "seeds": seed_list, "grid": grid, "compare": compare, "n_perm": n_perm, "base": base,
            "combinations": [{"label": _label(c), "slug": s, "values": c} for c, s in zip(combos, slugs)],
            "runs": runs}
    for run in runs:  # every combination must load before anything trains
        run_config(plan, run, Path("."))
    sweep_dir = Path(out) if out else Path(base_cfg.run.dir or "runs") / (
        f"sweep-{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (sweep_dir / PLAN).exists():
        raise UserError(f"{sweep_dir}: already holds a sweep; continue it with "
                        f"`cot-transplant sweep --resume {sweep_dir}`")
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise UserError(f"{sweep_dir}: exists and is not empty; choose another --out")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_yaml(sweep_dir / PLAN, {**plan, "_provenance": stamp()})
    return sweep_dir


def _write_yaml(path: Path, values: dict) -> None:
    import yaml

    from cot_transplant.runs.rundir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(values, sort_keys=False))


def read_plan(sweep_dir: Path) -> dict:
    """The plan of a sweep directory. Raises UserError when it is missing or from another plan version."""
    import yaml

    path = Path(sweep_dir) / PLAN
    if not path.is_file():
        raise UserError(f"{sweep_dir}: no {PLAN}; give a directory made by `cot-transplant sweep`")
    plan = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if plan.get("plan_version") != PLAN_VERSION:
        raise UserError(f"{path}: plan version {plan.get('plan_version')}, this package reads {PLAN_VERSION}")
    return plan


def run_config(plan: dict, run: dict, sweep_dir: Path) -> Config:
    """One run's config: the plan's base, its combination's grid values, its seed, and its place."""
    values = without_removed(plan["base"])  # a copy
    for key, value in plan["combinations"][run["combination"]]["values"].items():
        _set(values, key, value)
    values["seed"] = run["seed"]
    values["run"].update(dir=str(sweep_dir), name=run["name"])
    return load_config(base=values)


# --- running ----------------------------------------------------------------------------------------


def run_status(run_dir: Path) -> str:
    """"complete" (summary.json of a finished run), "resume" (a checkpoint), "restart" (a run dir without
    checkpoint: it died before its first one) or "new"."""
    from cot_transplant.runs import rundir

    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if not json.loads(summary.read_text(encoding="utf-8")).get("interrupted"):
                return "complete"
        except ValueError:
            pass
    if (run_dir / "config.yaml").is_file() and rundir.latest_checkpoint(run_dir) is not None:
        return "resume"
    return "restart" if run_dir.exists() else "new"

def run_sweep(sweep_dir: Path,
              report: Callable[[dict], dict] = lambda summary: summary) -> tuple[dict[str, str], bool]:
    """Train every run of the plan that is not complete; returns (failed: run name -> error, interrupted).

    `report` completes each finished run's summary (the `sweep` command passes
    `analysis.end_of_run.report_run`: baselines, curves.png, the printed summary).
    A run that stops with a UserError (e.g. non-finite losses) is reported and the sweep goes
    on; an interrupted run (Ctrl-C) stops the sweep. Both can be continued by invoking it again.
    """
    from cot_transplant.runs import rundir
    from cot_transplant.train import loop

    sweep_dir = Path(sweep_dir)
    plan = read_plan(sweep_dir)
    failed, interrupted = {}, False
    for i, run in enumerate(plan["runs"], 1):
        run_dir = sweep_dir / run["name"]
        status = run_status(run_dir)
        print(f"[sweep {i}/{len(plan['runs'])}] {run['name']}: {status}", flush=True)
        if status == "complete":
            continue
        try:
            if status == "resume":
                summary = loop.train(rundir.read_run_config(run_dir)[0], resume=run_dir, report=report)
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                summary = loop.train(run_config(plan, run, sweep_dir), config_path=plan["config"], report=report)
        except UserError as exc:
            failed[run["name"]] = str(exc)
            print(f"[sweep] {run['name']} failed: {exc}", file=sys.stderr, flush=True)
            continue
        if summary.get("interrupted"):
            interrupted = True
            print(f"[sweep] interrupted; continue with `cot-transplant sweep --resume {sweep_dir}`", flush=True)
            break
    return failed, interrupted
