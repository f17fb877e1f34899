"""Trained adapters in peft's own layout: loaded by peft alone they give the run's own predictions.

Each checkpoint holds `arguer/` / `chooser/` (adapter_config.json + adapter_model.safetensors) and the run's
`chosen/` the adapters of the validation-chosen evaluation; `lora.init_adapter` takes such a directory;
run directories written before that layout still evaluate and resume.
"""

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from cot_transplant.cli import main
from cot_transplant.errors import UserError
from cot_transplant.models import load_model
from cot_transplant.runs import rundir
from cot_transplant.runs.summary import summarize
from cot_transplant.train.loop import train
from cot_transplant.train.setup import setup
from train_helpers import tiny_cfg

# Runs with transformers and peft only: the base from BASE, the adapter from ADAPTER, then P("1"), P("2") over
# the full vocabulary at the last position of each chooser prompt, the way the run's evaluation computes them.
PEFT_ALONE = """
import json, sys
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base_dir, adapter_dir, inputs = sys.argv[1:]
job = json.load(open(inputs))
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter_dir)
model.eval()
out = {}
with torch.no_grad():
    for row_id, ids in job["prompts"].items():
        logits = model(torch.tensor([ids])).logits[0, -1]
        with model.disable_adapter():
            base_logits = model(torch.tensor([ids])).logits[0, -1]
        out[row_id] = [torch.softmax(x.double(), -1)[job["choice_ids"]].tolist() for x in (logits, base_logits)]
assert not [m for m in sys.modules if m.startswith("cot_transplant")], "imported this package"
print(json.dumps(out))
"""


def peft_alone(base_dir, adapter_dir, prompts: dict, choice_ids, tmp_path) -> dict:
    """{row_id: [[P1, P2] with the adapter, [P1, P2] of the base alone]} from a fresh interpreter."""
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"prompts": prompts, "choice_ids": list(choice_ids)}))
    done = subprocess.run([sys.executable, "-c", PEFT_ALONE, str(base_dir), str(adapter_dir), str(inputs)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {int(k): v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}


def test_a_text_only_chooser_loaded_by_peft_alone_gives_the_run_s_predictions(tiny_rows, tmp_path):
    cfg = tiny_cfg("variant=text-only", f"run.dir={tmp_path}", "run.name=r", "checkpoint.keep=5")
    train(cfg)
    run = tmp_path / "r"
    session = setup(cfg)  # the run's own prompts, tokenized as it tokenized them
    prompts = {ex.row_id: list(ex.chooser.ids) for ex in session.examples["test"]}
    base_dir = tmp_path / "base"
    load_model(cfg.model.name, seed=cfg.seed, vocab_size=len(session.tokenizer)).save_pretrained(base_dir)

    chosen = json.loads((run / "chosen" / "chosen.json").read_text())
    assert chosen["samples"] == summarize(run)["test_at_chosen"]["samples"]  # the summary's choice, kept
    ckpt = rundir.latest_checkpoint(run)
    at = {ckpt / "chooser": json.loads((ckpt / "state.json").read_text())["cursor"]["samples"],
          run / "chosen" / "chooser": chosen["samples"]}
    assert at[ckpt / "chooser"] == 8 and not (ckpt / "arguer").exists()  # text-only trains the chooser alone
    for adapter_dir, samples in at.items():
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "tiny-llama"  # built in code: no directory to name
        assert json.loads((adapter_dir / "cot-transplant.json").read_text())["model"] == "tiny-llama"
        got = peft_alone(base_dir, adapter_dir, prompts, session.settings.choice_ids, tmp_path)
        pred = rundir.read_predictions(run / "predictions" / f"test-{samples}.csv")
        assert sorted(got) == sorted(pred["row_id"])
        for row_id, p1, p2 in zip(pred["row_id"], pred["p_cand1"], pred["p_cand2"]):
            assert got[row_id][0] == pytest.approx([p1, p2], rel=1e-5, abs=1e-8), (adapter_dir, row_id)
    # The trained adapter is what makes those figures: the base alone gives others (P1 ~ 1/vocab on a tiny model).
    final = rundir.read_predictions(run / "predictions" / "test-8.csv")
    got = peft_alone(base_dir, ckpt / "chooser", prompts, session.settings.choice_ids, tmp_path)
    assert max(abs(got[r][1][0] / p1 - 1) for r, p1 in zip(final["row_id"], final["p_cand1"])) > 0.01


def test_a_local_base_is_named_by_its_absolute_path_and_both_roles_get_a_directory(tiny_rows, tmp_path,
                                                                                    monkeypatch):
    from cot_transplant.models import load_tokenizer

    base_dir, tokenizer = tmp_path / "base", load_tokenizer("smollm2")
    load_model("tiny-llama", seed=0, vocab_size=len(tokenizer)).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    monkeypatch.chdir(tmp_path)
    train(tiny_cfg("model.name=base", "run.dir=runs", "run.name=r"))  # a relative model directory
    ckpt = rundir.latest_checkpoint(tmp_path / "runs" / "r")
    for name in ("arguer", "chooser"):
        config = json.loads((ckpt / name / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(base_dir.resolve())
        assert json.loads((ckpt / name / "cot-transplant.json").read_text())["model"] == "base"
        weights = load_file(str(ckpt / name / "adapter_model.safetensors"))
        assert weights.keys() == load_file(str(ckpt / f"adapter-{name}.safetensors")).keys()
        assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
        assert (ckpt / name / "adapter_model.safetensors").stat().st_ino == (
            ckpt / f"adapter-{name}.safetensors").stat().st_ino  # one file under both names


def test_init_adapter_takes_a_checkpoint_s_adapter_directory(tiny_rows, tmp_path):
    train(tiny_cfg("variant=text-only", f"run.dir={tmp_path}", "run.name=first"))
    adapter = rundir.latest_checkpoint(tmp_path / "first") / "chooser"
    train(tiny_cfg("variant=text-only", f"run.dir={tmp_path}", "run.name=second", f"lora.init_adapter={adapter}",
                   "train.max_samples=4"))
    before = rundir.read_predictions(tmp_path / "second" / "predictions" / "test-0.csv")
    trained = rundir.read_predictions(tmp_path / "first" / "predictions" / "test-8.csv")
    assert before["p_cand1"] == pytest.approx(trained["p_cand1"], rel=1e-6)  # the second run starts where it ended
    with pytest.raises(UserError, match=r"has r=4, this run lora.r=8; set lora.r=4"):
        train(tiny_cfg("variant=text-only", f"run.dir={tmp_path}", "run.name=third", f"lora.init_adapter={adapter}",
                       "lora.r=8"))


def test_run_directories_written_before_the_peft_layout_still_evaluate_and_resume(tiny_rows, tmp_path, capsys):
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=old", "train.max_samples=4", "checkpoint.keep=5"))
    run = tmp_path / "old"
    for ckpt in (run / "checkpoints").glob("step-*"):  # as the older version wrote them
        for name in ("arguer", "chooser"):
            shutil.rmtree(ckpt / name)
    shutil.rmtree(run / "chosen")
    values = yaml.safe_load((run / "config.yaml").read_text())
    values["run"] = {"name": "old", "dir": str(tmp_path), "tensorboard": False, "progress": False}  # no run.loggers
    (run / "config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))

    assert main(["eval", str(run), "--split", "test"]) == 0
    assert main(["train", "--resume", str(run), "train.max_samples=8"]) == 0, capsys.readouterr().err
    ckpt = rundir.latest_checkpoint(run)
    assert json.loads((ckpt / "state.json").read_text())["cursor"]["samples"] == 8
    assert {"arguer", "chooser"} <= {p.name for p in ckpt.iterdir()}
    assert not list(run.glob("events.out.tfevents.*"))  # its run.tensorboard: false still holds
