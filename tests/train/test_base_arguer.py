"""`eval --control base-arguer`: a joint checkpoint's chooser reading the untrained arguer's states, on a tiny model
trained for one optimizer step (a fresh run, and one started from `lora.init_adapter`)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cot_transplant.cli import main
from cot_transplant.runs import rundir
from cot_transplant.train import steps
from cot_transplant.train.adapters import adapter_params, adapter_state
from cot_transplant.train.batches import collate
from cot_transplant.train.checkpoint import load_checkpoint
from cot_transplant.train.evaluate import predict
from cot_transplant.train.evaluate_checkpoint import load_evaluated
from cot_transplant.train.loop import train
from cot_transplant.train.setup import setup
from train_helpers import hash_dir, make_records, tiny_cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two joint runs on 16 rows (4 test rows), one optimizer step each: `fresh`, and `init`, started from `fresh`'s
    chooser adapter (`lora.init_adapter`); the row loader patched for the module."""
    import cot_transplant.analysis.plots as plots
    import cot_transplant.runs.records as run_records

    rows = make_records(16)
    root = tmp_path_factory.mktemp("base-arguer")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_records, "load_records", lambda cfg: list(rows))
        mp.setattr(plots, "plot_curves", lambda runs, out, **kw: out)
        torch.set_num_threads(1)
        common = ("train.max_samples=4", "eval.at_start=false", "eval.splits=[test]")
        train(tiny_cfg(f"run.dir={root}", "run.name=fresh", *common))
        init = rundir.latest_checkpoint(root / "fresh") / "chooser"
        train(tiny_cfg(f"run.dir={root}", "run.name=init", f"lora.init_adapter={init}", *common))
        yield {"fresh": root / "fresh", "init": root / "init", "init_adapter": init}
        torch.set_num_threads(threads)


def _session(run, control=None, **train_overrides):
    """The run's session with its latest checkpoint loaded as `eval --control control` loads it."""
    cfg, _ = rundir.read_run_config(run)
    session = setup(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_overrides)))
    load_evaluated(rundir.latest_checkpoint(run), session.model, control)
    return session


def _by_row(pred) -> dict[int, tuple[float, float]]:
    return {r: (p1, p2) for r, p1, p2 in zip(pred["row_id"], pred["p_cand1"], pred["p_cand2"])}


def _eval(run, *args) -> tuple[dict, dict]:
    """`cot-transplant eval RUN --split test ARGS`; (its JSON record, its predictions by row)."""
    assert main(["eval", str(run), "--split", "test", *args]) == 0
    stem = f"eval-{rundir.latest_checkpoint(run).name}" + ("-control-base-arguer" if args else "")
    (record,) = json.loads((run / f"{stem}.json").read_text())
    assert record["predictions"] == f"{stem}-test.csv"
    return record, _by_row(rundir.read_predictions(run / f"{stem}-test.csv"))


def _close(a: dict, b: dict, rel: float = 1e-7) -> None:
    assert a.keys() == b.keys()
    for row in a:
        assert a[row] == pytest.approx(b[row], rel=rel, abs=1e-12), row


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_base_arguer_equals_the_checkpoint_with_the_arguer_s_lora_b_zeroed(runs):
    run = runs["fresh"]
    ckpt = rundir.latest_checkpoint(run)
    before = hash_dir(ckpt)
    plain_record, plain = _eval(run)
    record, base = _eval(run, "--control", "base-arguer")
    assert hash_dir(ckpt) == before  # only read
    assert record["control"] == "base-arguer" and record["arguer_init"] is None
    assert set(record) == set(plain_record) | {"control", "arguer_init"}
    # Not a no-op: one step of lr 1e-2 moves p by far more than rounding.
    assert all(base[r] != pytest.approx(plain[r], rel=1e-6, abs=1e-12) for r in plain)
    # By hand: the checkpoint as plain eval loads it, then every lora_B of the arguer set to zero.
    cfg, _ = rundir.read_run_config(run)
    session = setup(cfg)
    load_checkpoint(ckpt, session.model, restore_rng=False)
    with torch.no_grad():
        for name, p in adapter_params(session.model, "arguer"):
            if "lora_B" in name:
                p.zero_()
    _close(base, _by_row(predict(session, "test")))


def test_base_arguer_keeps_the_checkpoint_s_chooser_and_zeroes_the_fresh_arguer(runs):
    ckpt = rundir.latest_checkpoint(runs["fresh"])
    session = _session(runs["fresh"], "base-arguer")
    assert _same(adapter_state(session.model, "chooser"), load_file(str(ckpt / "adapter-chooser.safetensors")))
    arguer = adapter_state(session.model, "arguer")
    trained = load_file(str(ckpt / "adapter-arguer.safetensors"))
    assert arguer.keys() == trained.keys() and any("lora_B" in k for k in arguer)
    assert all(not v.any() for k, v in arguer.items() if "lora_B" in k)
    assert any(trained[k].any() for k in trained if "lora_B" in k)
    # Every parameter that trained keeps its requires_grad flag (nothing switched through peft's set_adapter).
    assert all(p.requires_grad for _, p in adapter_params(session.model, "arguer"))
    assert all(p.requires_grad for _, p in adapter_params(session.model, "chooser"))
    # `adapter_state` copies (on a CPU model `.cpu()` alone would alias): the snapshot `load_evaluated` relies on.
    with torch.no_grad():
        next(p for n, p in adapter_params(session.model, "arguer") if "lora_B" in n).add_(1.0)
    assert all(not v.any() for k, v in arguer.items() if "lora_B" in k)
    assert not _same(arguer, adapter_state(session.model, "arguer"))


def test_base_arguer_predictions_are_the_same_with_the_fast_path_on_and_off(runs):
    fast, slow = _session(runs["fresh"], "base-arguer"), _session(runs["fresh"], "base-arguer", fast_path="off")
    batch = collate(fast.examples["test"], fast.tokenizer.pad_token_id)
    assert fast.step.path == steps.path_for(fast.step, batch) == steps.FAST and slow.step.path == steps.REFERENCE
    _close(_by_row(predict(fast, "test")), _by_row(predict(slow, "test")), rel=1e-6)


def test_base_arguer_of_a_run_started_from_an_init_adapter_is_that_adapter(runs):
    run, init = runs["init"], runs["init_adapter"]
    ckpt = rundir.latest_checkpoint(run)
    session = _session(run, "base-arguer")
    initial = load_file(str(init / "adapter_model.safetensors"))
    assert _same(adapter_state(session.model, "arguer"), initial)
    assert any(v.any() for k, v in initial.items() if "lora_B" in k)  # not the zeros of a fresh adapter
    assert not _same(load_file(str(ckpt / "adapter-arguer.safetensors")), initial)  # the arguer did train
    assert _same(adapter_state(session.model, "chooser"), load_file(str(ckpt / "adapter-chooser.safetensors")))
    record, _ = _eval(run, "--control", "base-arguer")
    assert record["arguer_init"] == str(init)


def test_base_arguer_on_an_adversarial_run_takes_its_step(runs, tmp_path):
    # The adversarial variant's eval is the reference forward with the same two adapters: a copy of the joint
    # run relabelled adversarial gives the joint run's base-arguer predictions.
    other = tmp_path / "adversarial"
    shutil.copytree(runs["fresh"], other)
    text = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(text.replace("variant: joint", "variant: adversarial", 1))
    _close(_eval(other, "--control", "base-arguer")[1], _eval(runs["fresh"], "--control", "base-arguer")[1],
           rel=1e-6)


@pytest.mark.parametrize("variant, why", [
    ("frozen-arguer", "already reads the base arguer"),
    ("text-only", "it has no arguer"),
    ("shared", "one adapter plays both roles"),
    ("no-argument", "an arguer adapter trained apart from the chooser's"),
])
def test_base_arguer_on_another_variant_is_one_line_exit_2(runs, tmp_path, capsys, variant, why):
    text = (runs["fresh"] / "config.yaml").read_text()
    assert "variant: joint" in text
    (tmp_path / "config.yaml").write_text(text.replace("variant: joint", f"variant: {variant}", 1))
    assert main(["eval", str(tmp_path), "--control", "base-arguer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"trained as {variant}" in err[0] and "joint or adversarial" in err[0] and why in err[0], err


def test_base_arguer_resets_the_arguer_s_base_of_a_model_pair(tiny_rows, tmp_path):
    # Two bases (arguer.model / chooser.model): the arguer's adapter lives on the pair's arguer model.
    from cot_transplant.models import build_tiny, load_tokenizer
    from cot_transplant.train.adapters import ModelPair

    vocab = len(load_tokenizer("smollm2"))
    for name, seed in (("a", 1), ("b", 2)):
        build_tiny("tiny-llama", vocab, seed=seed).save_pretrained(tmp_path / name)
    cfg = tiny_cfg(f"arguer.model={tmp_path / 'a'}", f"chooser.model={tmp_path / 'b'}")
    trained = setup(cfg).model
    assert isinstance(trained, ModelPair)
    with torch.no_grad():  # a stand-in for training: every weight of both adapters moved
        for name in ("arguer", "chooser"):
            for _, p in adapter_params(trained, name):
                p.add_(0.01)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"adapters": ["arguer", "chooser"]}))
    for name in ("arguer", "chooser"):
        save_file(adapter_state(trained, name), str(ckpt / f"adapter-{name}.safetensors"))
    model = setup(cfg).model
    initial = adapter_state(model, "arguer")
    load_evaluated(ckpt, model, "base-arguer")
    assert _same(adapter_state(model, "arguer"), initial)
    assert all(not v.any() for k, v in initial.items() if "lora_B" in k)
    assert _same(adapter_state(model, "chooser"), adapter_state(trained, "chooser"))
