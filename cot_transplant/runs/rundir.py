"""The run directory: config, splits, metrics, predictions, checkpoints; every file stamped.

Layout of `runs/<name>/`:
  config.yaml        resolved config + `_provenance` (version, git hash, libraries)
  spec.json          the transplant spec (`TransplantSpec.to_dict`: site, layers)
  splits.json        row ids of each split
  metrics.jsonl      one object per train log and per eval (fields that vary between identical
                     runs, and only those, have names containing time, wall, per_s, rss or eta)
  events.*           TensorBoard (run.loggers); wandb/, mlflow.db, mlartifacts/, tracking.json: the other trackers
  predictions/<split>-<samples>.csv   row_id,p_cand1,p_cand2,label,argument_choice
  checkpoints/step-<N>/               adapters (safetensors; also arguer/, chooser/ in peft's layout), optimizer
                                      (safetensors + JSON), RNG, cursor, and copies of config.yaml and spec.json
  chosen/                             the adapters at the evaluation chosen on validation, in peft's layout
  curves.png, summary.json
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cot_transplant.config import Config, save_config
from cot_transplant.errors import UserError
from cot_transplant.provenance import stamp

if TYPE_CHECKING:
    from cot_transplant.transplant.spec import TransplantSpec

FORMAT_VERSION = 1


def make_run_dir(cfg: Config, config_path: str | None) -> Path:
    """Create `run.dir/run.name` (defaults: ./runs, <config stem>-<variant>-<time>)."""
    parent = Path(cfg.run.dir or "runs")
    name = cfg.run.name or "-".join([Path(config_path).stem if config_path else "run", cfg.variant,
                                     time.strftime("%Y%m%d-%H%M%S")])
    path = parent / name
    if (path / "metrics.jsonl").exists():
        raise UserError(f"{path}: a run already exists there; resume it with `cot-transplant train --resume {path}` "
                        "or choose another run.name")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_config(run: Path, cfg: Config, spec: TransplantSpec) -> None:
    """config.yaml (the resolved config and its provenance) and spec.json (`spec`, its transplant spec) in `run`."""
    import yaml

    save_config(cfg, run / "config.yaml")
    with open(run / "config.yaml", "a", encoding="utf-8") as f:
        f.write(yaml.safe_dump({"_provenance": {**stamp(), "format_version": FORMAT_VERSION}}, sort_keys=False))
    atomic_write_text(run / "spec.json", json.dumps(spec.to_dict()))


def read_run_config(run: Path) -> tuple[Config, dict]:
    """The run's own config and provenance; refuses an incompatible format version."""
    import yaml

    from cot_transplant.config import load_config, without_removed

    path = run / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run}: not a run directory (no config.yaml); give a directory under runs/")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    prov = values.pop("_provenance", {}) or {}
    if prov.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{run}: written by an incompatible version (run format {prov.get('format_version')}, "
                        f"this is {FORMAT_VERSION}, package {prov.get('version')}); re-run it with this version")
    return load_config(base=without_removed(values)), prov


def write_splits(run: Path, splits: dict[str, list[int]], skipped: dict) -> None:
    atomic_write_text(run / "splits.json", json.dumps({**splits, "skipped": skipped, **{"_provenance": stamp()}}))


class MetricsLog:
    """Append-only metrics.jsonl (flushed per line) mirrored to experiment trackers (`train.tracking` makes them)."""

    def __init__(self, run: Path, trackers: list = ()):
        self.path = run / "metrics.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")
        self.trackers = list(trackers)

    def lines(self) -> int:
        self.file.flush()
        with open(self.path, encoding="utf-8") as f:
            return sum(1 for _ in f)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for tracker in self.trackers:
            tracker.log(record)

    def close(self, figure: str | Path | None = None) -> None:
        """Close the file and the trackers, which log `figure` (curves.png) first where it exists."""
        self.file.close()
        figure = Path(figure) if figure and Path(figure).is_file() else None
        for tracker in self.trackers:
            tracker.close(figure)
        self.trackers = []


def truncate_lines(path: Path, n: int) -> None:
    """Keep the first `n` lines of a file (resume cuts metrics back to its checkpoint)."""
    with open(path, encoding="utf-8") as f:
        kept = [line for _, line in zip(range(n), f)]
    atomic_write_text(path, "".join(kept))


def write_predictions(run: Path, split: str, samples: int, rows: list[tuple]) -> Path:
    """rows: (row_id, p_cand1, p_cand2, label, argument_choice); probabilities at full precision."""
    return write_prediction_rows(run / "predictions" / f"{split}-{samples}.csv", rows)


def write_prediction_rows(path: Path, rows) -> Path:
    """A predictions CSV at `path` (atomically); see `write_predictions`."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["row_id", "p_cand1", "p_cand2", "label", "argument_choice"])
        for row_id, p1, p2, label, choice in rows:
            w.writerow([row_id, repr(float(p1)), repr(float(p2)), int(label), int(choice)])
    os.replace(tmp, path)
    return path


def read_predictions(path: Path) -> dict[str, list]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"row_id": [int(r["row_id"]) for r in rows], "p_cand1": [float(r["p_cand1"]) for r in rows],
            "p_cand2": [float(r["p_cand2"]) for r in rows], "label": [int(r["label"]) for r in rows],
            "argument_choice": [int(r["argument_choice"]) for r in rows]}


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run}: no metrics.jsonl; is this a run directory?")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{i}: not a JSON line; the file is damaged") from None
    return out


def prune_checkpoints(run: Path, keep: int) -> None:
    ckpts = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run: Path) -> Path | None:
    ckpts = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    ckpts = [c for c in ckpts if (c / "state.json").is_file()]
    return ckpts[-1] if ckpts else None


def find_checkpoint(run: Path, step: int | None = None) -> Path:
    """checkpoints/step-<step>, or the latest; UserError naming the available ones otherwise."""
    ckpt = run / "checkpoints" / f"step-{step}" if step is not None else latest_checkpoint(run)
    if ckpt is None or not (ckpt / "state.json").is_file():
        available = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
        raise UserError(f"{run}: checkpoint {'(latest)' if step is None else f'step-{step}'} not found; "
                        f"available: {available or 'none'}")
    return ckpt
