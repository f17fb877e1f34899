"""Scale-out: 2 CPU processes (gloo, started by torchrun) equal one process; GPU options fail clearly.

(Accelerate 1.16's `accelerate launch --cpu --num_processes 2` starts a single process without an MPI
host file, so this launches with torchrun, and checks that two processes really ran.)"""

import glob
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cot_transplant.cli import main

TINY = {"variant": "joint", "seed": 3,
        "data": {"synthetic": {"n": 24, "seed": 5, "steps": [2], "short": True},
                 "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"name": "tiny-llama"}, "prompt": {"template": "chat"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_samples": 16, "batch_size": 2, "accumulate_to": 8, "optim": {"lr": 1.0e-2}},
        "eval": {"every": 8, "batch_size": 4}, "checkpoint": {"every": 1, "keep": 1},
        "run": {"progress": False, "tensorboard": False}}


def adapters(run):
    return {name: load_file(glob.glob(f"{run}/checkpoints/step-*/adapter-{name}.safetensors")[0])
            for name in ("arguer", "chooser")}


def test_two_gloo_processes_end_with_the_adapters_of_one(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cot_transplant", "train", str(config),
                          f"run.dir={tmp_path}", "run.name=two"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 processes, each on cpu" in two.stderr  # two really ran, as one group
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["two"]  # one run directory
    assert main(["train", str(config), f"run.dir={tmp_path}", "run.name=one"]) == 0
    one, two = adapters(tmp_path / "one"), adapters(tmp_path / "two")
    moved = 0.0
    for name in one:
        for key in one[name]:
            torch.testing.assert_close(two[name][key], one[name][key], rtol=0, atol=1e-5)
            moved = max(moved, one[name][key].abs().max().item())
    assert moved > 1e-3  # the adapters trained, so equality is not trivial
    lines = [(tmp_path / r / "metrics.jsonl").read_text().count("\n") for r in ("one", "two")]
    assert lines[0] == lines[1]  # the main process alone wrote the same log


@pytest.mark.parametrize("override, message", [
    ("model.load_in_8bit=true", "needs a CUDA GPU"),
    ("model.load_in_4bit=true", "needs a CUDA GPU"),
    ("model.attn_implementation=flash_attention_2", "flash_attention_2 needs a CUDA GPU"),
    ("model.dtype=fp8", "model.dtype"),
    ("model.device=cuda", "no CUDA GPU"),
])
def test_gpu_settings_fail_with_one_line_on_cpu(tmp_path, capsys, override, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model": {"name": "smollm2"}}))
    assert main(["train", str(config), override, f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
