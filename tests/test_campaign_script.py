"""scripts/campaign.sh end to end on a tiny model: runs, eval-only controls, the exported small outputs (no weights),
skipping what is finished, and `cot-transplant results` on what it exported."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_CSV = ROOT.parent / "shared" / "seed-data" / "dataset.csv"

TINY = """\
variant: joint
seed: 0
data: {path: %s, split: grouped, max_rows: 30, val_fraction: 0.25, test_fraction: 0.3, argument: none}
model: {name: tiny-llama}
prompt: {template: chat}
lora: {r: 4, alpha: 8, dropout: 0.0}
loss: {choice_only: true}
train: {max_samples: 8, batch_size: 2, accumulate_to: 4}
eval: {at: [4, 8], at_start: false, batch_size: 8}
checkpoint: {every: 1000, at_eval: true, keep: 4}
run: {progress: false, loggers: []}
"""


@pytest.mark.skipif(not SEED_CSV.is_file(), reason="../shared/seed-data/dataset.csv not beside the repo")
def test_the_campaign_script_runs_exports_and_skips_what_is_done(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY % SEED_CSV)
    ct = tmp_path / "ct"
    ct.write_text(f'#!/bin/sh\nexec {sys.executable} -m cot_transplant "$@"\n')
    ct.chmod(0o755)
    env = {**os.environ, "CT": str(ct), "CONFIG": str(config), "ONLY": "^(plant100-joint-s0|noarg-text-only-s0)$",
           "PYTHONPATH": str(ROOT)}
    work, results = tmp_path / "work", tmp_path / "results"

    def campaign():
        return subprocess.run(["bash", str(ROOT / "scripts" / "campaign.sh"), str(work), str(results)], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=900)

    done = campaign()
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in results.iterdir()) == ["noarg-text-only-s0", "plant100-joint-s0"]
    joint = results / "plant100-joint-s0"
    for name in ("config.yaml", "spec.json", "splits.json", "metrics.jsonl", "summary.json", "log.txt",
                 "predictions/test-4.csv", "predictions/test-8.csv", "predictions/val-8.csv"):
        assert (joint / name).is_file(), name
    for label in ("base-arguer", "shuffled-kv-length-matched", "swapped-kv"):
        assert list(joint.glob(f"eval-step-*-control-{label}-test.csv")), label
    assert "planted_fraction: 1.0" in (joint / "config.yaml").read_text()
    assert not list(results.rglob("*.safetensors")) and not list(work.rglob("*.safetensors"))  # no weights kept
    assert "wall_s" in (joint / "log.txt").read_text()
    stamp = (joint / "summary.json").stat().st_mtime_ns

    again = campaign()  # everything wanted is in results: nothing runs again
    assert again.returncode == 0 and "campaign: plant100-joint-s0" not in again.stderr
    assert "matching ONLY=^(plant100" in again.stderr  # not "every run of the config": ONLY chose two
    assert (joint / "summary.json").stat().st_mtime_ns == stamp

    doc = tmp_path / "results.md"
    doc.write_text("<!-- results:positive-series -->\n<!-- /results:positive-series -->\n"
                   "<!-- results:campaign-status -->\n<!-- /results:campaign-status -->\n")
    from cot_transplant.cli import main
    assert main(["results", str(results), "--doc", str(doc), "--reference", str(tmp_path / "none.csv")]) == 0
    text = doc.read_text()
    assert "`plant100-joint-s0`" in text and "2 finished runs" in text


def test_a_run_cut_off_mid_way_logs_the_wall_time_it_spent(tmp_path):
    """The end of a session stops the campaign mid-run: the attempt's wall time still reaches the run's log (so
    the status table's totals count it), and nothing is exported as finished."""
    ct = tmp_path / "ct"
    ct.write_text("#!/bin/sh\nexec sleep 60\n")  # a training run that is still going when the session ends
    ct.chmod(0o755)
    work, results = tmp_path / "work", tmp_path / "results"
    env = {**os.environ, "CT": str(ct), "ONLY": "^noarg-text-only-s0$"}
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "campaign.sh"), str(work), str(results)], env=env,
                            cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().strip() == "campaign: noarg-text-only-s0"
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    log = (work / "noarg-text-only-s0.log").read_text()
    assert re.search(r"^wall_s \d+ interrupted$", log, re.M), log
    assert not (results / "noarg-text-only-s0").exists()
