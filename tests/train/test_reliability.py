"""Crash safety: exact resume after SIGKILL, non-finite losses, out-of-memory, long rows, one-line errors."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cot_transplant.cli import main
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir
from cot_transplant.train.loop import train
from train_helpers import tiny_cfg

VARYING = ("time", "wall", "per_s", "rss", "eta")
TINY = {"variant": "joint", "seed": 3,
        "data": {"synthetic": {"n": 24, "seed": 5, "steps": [2], "short": True},
                 "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"name": "tiny-llama"}, "prompt": {"template": "chat"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},  # dropout on: the torch RNG must be restored too
        "train": {"max_samples": 96, "batch_size": 2, "accumulate_to": 4, "optim": {"lr": 1.0e-2}},
        "eval": {"every": 32, "batch_size": 8}, "checkpoint": {"every": 1, "keep": 2},
        "run": {"progress": False, "tensorboard": False}}


def stable(path: Path) -> list[dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in x.items() if not any(w in k for w in VARYING)} for x in lines]


def cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cot_transplant", *args], env=env, **kw)


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    full = cli("train", str(config), f"run.dir={tmp_path}", "run.name=full", stdout=subprocess.DEVNULL)
    killed = cli("train", str(config), f"run.dir={tmp_path}", "run.name=killed", stdout=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while not list(ckpts.glob("step-*")) and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0, 0.5))  # a random point after the first checkpoint
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert full.wait(timeout=300) == 0
    assert rundir.latest_checkpoint(tmp_path / "killed") is not None
    assert not (tmp_path / "killed" / "summary.json").exists(), "the kill came after the run had finished"
    resumed = cli("train", "--resume", str(tmp_path / "killed"), stdout=subprocess.DEVNULL)
    assert resumed.wait(timeout=300) == 0
    a, b = stable(tmp_path / "full" / "metrics.jsonl"), stable(tmp_path / "killed" / "metrics.jsonl")
    assert a == b
    assert a[-1]["samples"] == 96


def test_ctrl_c_writes_a_checkpoint_and_the_summary(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "max_samples": 400}}))
    proc = cli("train", str(config), f"run.dir={tmp_path}", "run.name=r", stdout=subprocess.PIPE, text=True)
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 240
    while (not metrics.exists() or '"train"' not in metrics.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0
    assert "interrupted" in out and "test f_c" in out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["interrupted"] is True
    assert rundir.latest_checkpoint(tmp_path / "r") is not None


def test_non_finite_losses_are_skipped_counted_and_stop_the_run(tiny_rows, tmp_path, monkeypatch):
    import cot_transplant.train.loop as loop

    real = loop.forward_backward

    def nan_loss(model, batch, s, step, scale, cache=None):
        out = real(model, batch, s, step, scale, cache)
        return dataclasses.replace(out, loss=torch.full_like(out.loss, float("nan")))

    monkeypatch.setattr(loop, "forward_backward", nan_loss)
    with pytest.raises(UserError, match="non-finite loss"):
        train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "train.max_nonfinite=2", "train.max_samples=40"))
    lines = [x for x in rundir.read_metrics(tmp_path / "r") if x["kind"] == "train"]
    assert [x["train/nonfinite"] for x in lines] == [1, 2]
    assert rundir.latest_checkpoint(tmp_path / "r") is not None


@pytest.mark.parametrize("split, expect_oom_rows", [(False, 2), (True, 0)])
def test_out_of_memory_is_counted_or_split_in_half(tiny_rows, tmp_path, monkeypatch, capsys, split, expect_oom_rows):
    import cot_transplant.train.loop as loop

    real = loop.forward_backward
    calls = {"n": 0}

    def oom_on_pairs(model, batch, s, step, scale, cache=None):
        calls["n"] += 1
        if len(batch.row_ids) > 1 and calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, batch, s, step, scale, cache)

    monkeypatch.setattr(loop, "forward_backward", oom_on_pairs)
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", f"train.oom_split={str(split).lower()}",
                   "train.max_samples=4"))
    first = [x for x in rundir.read_metrics(tmp_path / "r") if x["kind"] == "train"][0]
    assert first["train/oom_rows"] == expect_oom_rows
    assert ("out of memory on a sub-batch" in capsys.readouterr().out) == (not split)


def test_rows_over_the_token_limit_are_skipped_or_truncated(tiny_rows, tmp_path):
    from cot_transplant.train.setup import setup

    full = setup(tiny_cfg())
    longest = max(len(e.chooser.ids) for e in full.examples["train"])
    shortest = min(len(e.chooser.ids) for e in full.examples["train"])
    limit = (longest + shortest) // 2
    skipped = setup(tiny_cfg(f"prompt.max_tokens={limit}"))
    assert skipped.skipped["train"] > 0
    assert len(skipped.examples["train"]) + skipped.skipped["train"] == len(full.examples["train"])
    cut = setup(tiny_cfg(f"prompt.max_tokens={limit}", "prompt.overflow=truncate"))
    assert cut.skipped["train"] == 0 and len(cut.examples["train"]) == len(full.examples["train"])
    assert max(len(e.chooser.ids) for e in cut.examples["train"]) <= limit


def one_line_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (argv, code, err)
    return err[0]


def test_every_command_mistake_is_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    wrong_type = tmp_path / "w.yaml"
    wrong_type.write_text("train:\n  batch_size: [1]\n")
    cases = {
        ("train", str(tmp_path / "missing.yaml")): "not found",
        ("train", str(tmp_path)): "directory",
        ("train", str(wrong_type)): "train.batch_size",
        ("train", str(cfg), "train.optim.lrr=1"): "did you mean 'train.optim.lr'",
        ("train", str(cfg), f"data.path={empty}"): "empty.csv",
        ("train", str(cfg), f"data.path={tmp_path / 'nope.csv'}"): "nope.csv",
        ("train", str(cfg), "model.name=no-such-org/no-such-model"): "could not be loaded",
        ("train", "--resume", str(tmp_path / "nope")): "not found",
        ("train", "--resume", str(tmp_path)): "not a run directory",
        ("eval", str(tmp_path / "nope")): "not found",
        ("plot", str(tmp_path / "nope")): "nope",
        ("data", "validate", str(tmp_path / "nope.csv")): "nope.csv",
        ("data", "stats", str(empty)): "empty",
        ("generate", "--questions", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "o.csv"),
         "--backend", "local"): "q.jsonl",
    }
    for argv, message in cases.items():
        assert message in one_line_error(list(argv), capsys), argv
    # A run directory from an incompatible version, and one with no checkpoint.
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({**TINY, "_provenance": {"format_version": 0, "version": "0.0.1"}}))
    assert "incompatible version" in one_line_error(["train", "--resume", str(run)], capsys)
    (run / "config.yaml").write_text(yaml.safe_dump({**TINY, "_provenance": {"format_version": rundir.FORMAT_VERSION}}))
    assert "no checkpoint" in one_line_error(["train", "--resume", str(run)], capsys)


def test_no_pickle_loading_and_no_remote_code_by_default():
    root = Path(__file__).resolve().parents[2] / "cot_transplant"
    for path in root.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
            assert "pickle.load" not in line, f"{path}: {line.strip()}"
            assert "trust_remote_code=True" not in line, f"{path}: {line.strip()}"
