"""Controls as variants of the same loop (what each injects, against the plain run's states), and the
truncation study (fraction 1.0 is the plain evaluation, exactly)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cot_transplant.analysis.truncation import truncation
from cot_transplant.cli import main
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir
from cot_transplant.train.steps import reference
from cot_transplant.train.evaluate import hide_tails
from cot_transplant.train.loop import train

CONTROLS = {  # name: overrides; every run sees the same rows in the same order (one seed)
    "joint": [],
    "shuffled-kv": ["variant=shuffled-kv"],
    "swapped-kv": ["variant=swapped-kv"],
    "no-argument": ["variant=no-argument"],
    "site-k": ["transplant.site=k"],
    "site-v": ["transplant.site=v"],
    "site-residual": ["transplant.site=residual"],
    "layer-1": ["transplant.layers=[1]"],
}


@pytest.fixture
def injected(tmp_path, tiny_cfg, tiny_train, monkeypatch):
    """Train every control for two optimizer steps; return {name: (states, chooser mask, span lengths, summary)} of the
    first injection (the first train sub-batch, before any update, so only the variant differs)."""
    first = {}
    real_inject = reference.inject_kv

    def recording_inject(model, spans, kv, attention_mask=None, **kw):
        first.setdefault(current["name"], ({k: t.detach().clone() for k, t in kv.tensors.items()},
                                           attention_mask.clone(), kv.lengths))
        return real_inject(model, spans, kv, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(reference, "inject_kv", recording_inject)
    current, out = {}, {}
    for name, overrides in CONTROLS.items():
        current["name"] = name
        # The reference path: it injects through `inject_kv`, which this fixture records (the fast path
        # feeds the same states to attention directly; tests/train/steps/test_fast.py checks they agree).
        cfg = tiny_cfg("train.accumulate_to=2", "eval.at_start=false", "eval.splits=[val]", f"run.dir={tmp_path}",
                       f"run.name={name}", "train.fast_path=off", *overrides)
        summary = train(cfg)
        out[name] = (*first[name], summary)
    return out


def _entries(recorded, key) -> list[torch.Tensor]:
    """One site's states split into span entries (row-major: row 0 cand 1, row 0 cand 2, row 1 cand 1, ...)."""
    states, _, lengths, _ = recorded
    return list(states[key].split(list(lengths)))


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol)


def test_controls_run_the_loop_and_inject_what_they_claim(injected):
    joint, joint_mask, _, _ = injected["joint"]
    keys = {(k, layer) for k in ("k", "v") for layer in (0, 1)}
    assert set(joint) == keys
    for name, (_, _, _, summary) in injected.items():
        assert summary["samples_trained"] == 4 and not summary["interrupted"], name
        assert summary["test_at_end"] is None  # eval.splits=[val]: the loop honours it for every control

    # shuffled-kv: another row's argument, so other states (here even another token count).
    shuffled = injected["shuffled-kv"][0]
    assert set(shuffled) == keys
    assert not any(_same(shuffled[k], joint[k]) for k in keys)

    # swapped-kv: each candidate slot receives the other candidate's states (entries are row-major:
    # row 0 cand 1, row 0 cand 2, row 1 cand 1, ...); the plain run's order is the reverse in each row.
    swapped = injected["swapped-kv"]
    assert swapped[2] == tuple(injected["joint"][2][i ^ 1] for i in range(len(swapped[2])))
    for k in keys:
        plain, other = _entries(injected["joint"], k), _entries(swapped, k)
        assert len(plain) == 4
        assert all(_same(other[i], plain[i ^ 1]) for i in range(4))
        assert not _same(other[0], plain[0])  # a real exchange: the two candidates' states differ

    # no-argument: the arguer passes are unchanged, so the states are the plain run's; what differs is
    # the chooser's prompt, which lost the choice argument's tokens.
    no_arg, no_arg_mask, _, _ = injected["no-argument"]
    assert all(_same(no_arg[k], joint[k], atol=1e-6) for k in keys)
    assert (no_arg_mask.sum(1) < joint_mask.sum(1)).all()

    # Sites: k or v alone are the plain run's k or v; residual moves the decoder layer outputs (hidden
    # width, not k/v width); layers=[1] moves only layer 1.
    assert set(injected["site-k"][0]) == {("k", 0), ("k", 1)}
    assert set(injected["site-v"][0]) == {("v", 0), ("v", 1)}
    for name in ("site-k", "site-v", "layer-1"):
        for key, t in injected[name][0].items():
            assert torch.equal(t, joint[key]), (name, key)
    residual = injected["site-residual"][0]
    assert set(residual) == {("residual", 0), ("residual", 1)}
    assert residual[("residual", 0)].shape[1] == 32 != joint[("k", 0)].shape[1]
    assert set(injected["layer-1"][0]) == {("k", 1), ("v", 1)}


# --- truncation -----------------------------------------------------------------------------------


def test_hide_tails_masks_exactly_the_cut_off_tokens():
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    hide_tails(mask, [[(2, 6), (8, 12)], [(3, 6), (9, 10)]], 0.5)
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1]
    assert mask[1].tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1]  # ceil(1.5) = 2 kept; 1 token kept


def test_truncation_at_one_is_the_plain_evaluation(tmp_path, tiny_cfg, tiny_train, capsys):
    run = tmp_path / "run"
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=run", "eval.at_start=false"))
    plain = rundir.read_predictions(run / "predictions" / "test-4.csv")

    assert main(["truncation", str(run), "--fractions", "0.25,1"]) == 0
    out = capsys.readouterr().out
    assert "fraction 0.25" in out and "as prefixes of longer spans" in out
    result = json.loads((run / "truncation.json").read_text())
    # Fraction 1 runs first and computes every batch; fraction 0.25 reads the first tokens of those states.
    cache = result["arguer_cache"]
    assert cache["misses"] == cache["hits"] == cache["prefix_hits"] >= 1 and cache["stored_rows"] == 3
    assert (result["split"], result["checkpoint"], result["samples"], result["tail"]) == ("test", "step-1", 4, "text")
    assert [r["fraction"] for r in result["fractions"]] == [0.25, 1.0]
    for r in result["fractions"]:
        assert {"f_c", "f_c_ci_low", "f_c_ci_high", "auroc", "n"} <= set(r) and r["n"] == 3
        assert r["f_c_ci_low"] <= r["f_c"] <= r["f_c_ci_high"]
    assert (run / "truncation.png").stat().st_size > 10_000
    at = {r["fraction"]: rundir.read_predictions(run / r["predictions"]) for r in result["fractions"]}
    assert at[1.0] == plain  # the same rows and the same probabilities, to the last bit
    assert at[0.25]["p_cand1"] != plain["p_cand1"]

    uncached = tmp_path / "uncached"  # the same study with the cache off: the same numbers up to rounding
    shutil.copytree(run, uncached)
    config = uncached / "config.yaml"
    assert "arguer_cache_gib: 4" in config.read_text()
    config.write_text(config.read_text().replace("arguer_cache_gib: 4", "arguer_cache_gib: 0", 1))
    recomputed = truncation(uncached, [0.25, 1.0])
    assert recomputed["arguer_cache"] is None
    for r in recomputed["fractions"]:
        got = rundir.read_predictions(uncached / r["predictions"])
        assert got["p_cand1"] == pytest.approx(at[r["fraction"]]["p_cand1"], rel=1e-5, abs=1e-7)

    hidden = truncation(run, [0.25, 1.0], tail="hidden")
    hidden_at = {r["fraction"]: rundir.read_predictions(run / r["predictions"]) for r in hidden["fractions"]}
    assert hidden_at[1.0] == plain
    assert hidden_at[0.25]["p_cand1"] != at[0.25]["p_cand1"]  # hiding the tail changes what the chooser sees

    with pytest.raises(UserError, match="step-9"):
        truncation(run, [1.0], checkpoint=9)
    text_only = tmp_path / "text-only"
    shutil.copytree(run, text_only)
    config = text_only / "config.yaml"
    config.write_text(config.read_text().replace("variant: joint", "variant: text-only", 1))
    with pytest.raises(UserError, match="transplants nothing"):
        truncation(text_only, [0.5, 1.0])
    assert main(["truncation", str(run), "--fractions", "0,1"]) == 2
