"""Eval-only controls on a joint checkpoint (`eval --control swapped-kv|shuffled-kv`), length-matched donors, and
the baselines in summary.json; on a tiny model trained for one optimizer step."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cot_transplant.analysis.baselines import baselines
from cot_transplant.analysis.breakdown import run_records
from cot_transplant.analysis.end_of_run import format_summary, report_run
from cot_transplant.cli import main
from cot_transplant.config import DONORS
from cot_transplant.prompts.templates import get_template
from cot_transplant.runs import rundir
from cot_transplant.train import steps
from cot_transplant.train.batches import (build_example, candidate_lengths, collate, donors,
                                          length_matched_donors)
from cot_transplant.train.checkpoint import load_checkpoint
from cot_transplant.train.evaluate import predict
from cot_transplant.train.loop import train
from cot_transplant.train.setup import build_examples, donor_order, setup
from train_helpers import hash_dir, make_records, tiny_cfg

QUESTION = "Ann buys 3 packs of 4 pens and 5 more pens. How many pens?"  # one question: donors share it


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A joint run on 16 rows (4 test rows) sharing one question, one optimizer step; loaders patched for the module."""
    import cot_transplant.analysis.plots as plots
    import cot_transplant.runs.records as run_records

    rows = [dataclasses.replace(r, question=QUESTION) for r in make_records(16)]
    root = tmp_path_factory.mktemp("controls")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_records, "load_records", lambda cfg: list(rows))
        mp.setattr(plots, "plot_curves", lambda runs, out, **kw: out)
        torch.set_num_threads(1)
        train(tiny_cfg(f"run.dir={root}", "run.name=joint", "train.max_samples=4", "eval.at_start=false",
                       "eval.splits=[test]"), report=report_run)
        yield root / "joint"
        torch.set_num_threads(threads)


def _session(run, control=None, **train_overrides):
    cfg, _ = rundir.read_run_config(run)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_overrides))
    session = setup(cfg, control=control)
    load_checkpoint(rundir.latest_checkpoint(run), session.model, restore_rng=False)
    return session


def _by_row(pred) -> dict[int, tuple[float, float]]:
    return {r: (p1, p2) for r, p1, p2 in zip(pred["row_id"], pred["p_cand1"], pred["p_cand2"])}


def _predict_records(session, records) -> dict[int, tuple[float, float]]:
    """Plain (joint) predictions of the test split with its rows replaced by `records`."""
    cfg = session.cfg
    template = get_template(cfg.prompt.template, session.tokenizer, cfg.prompt.template_file)
    session.examples["test"] = [build_example(r, template, session.tokenizer, shift=cfg.transplant.shift)
                                for r in records]
    return _by_row(predict(session, "test"))


def _eval(run, *args) -> tuple[dict, dict]:
    """`cot-transplant eval RUN --split test ARGS`; (its JSON record, its predictions by row)."""
    assert main(["eval", str(run), "--split", "test", *args]) == 0
    stem = f"eval-{rundir.latest_checkpoint(run).name}"
    control = args[args.index("--control") + 1] if "--control" in args else None
    if "--donors" in args and args[args.index("--donors") + 1] == "length-matched":
        control += "-length-matched"
    if control:
        stem += f"-control-{control}"
    (record,) = json.loads((run / f"{stem}.json").read_text())
    assert record["predictions"] == f"{stem}-test.csv"
    return record, _by_row(rundir.read_predictions(run / f"{stem}-test.csv"))


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for row in a:
        assert a[row] == pytest.approx(b[row], rel=1e-7, abs=1e-12), row


def test_swapped_control_changes_predictions_as_swapping_the_rows_does(run, capsys):
    ckpt = rundir.latest_checkpoint(run)
    before = hash_dir(ckpt)
    plain_record, plain = _eval(run)
    record, swapped = _eval(run, "--control", "swapped-kv")
    assert hash_dir(ckpt) == before
    assert "control" not in plain_record and record["control"] == "swapped-kv"
    assert set(record) == set(plain_record) | {"control"}
    # A tiny model one step from its start: the states move p by ~1e-4 (relative), far beyond rounding.
    assert all(swapped[r] != pytest.approx(plain[r], rel=1e-6, abs=1e-12) for r in plain)
    # By hand: each row with its two candidates exchanged (swapped flipped), evaluated plainly.
    session = _session(run)
    flipped = [dataclasses.replace(session.records[i], swapped=not session.records[i].swapped)
               for i in session.splits["test"]]
    _close(swapped, _predict_records(session, flipped))
    out = capsys.readouterr().out
    assert "test (swapped-kv): " in out and "baselines on 4 rows: length-only" in out


def test_shuffled_control_reads_the_donor_rows_states(run):
    ckpt = rundir.latest_checkpoint(run)
    before = hash_dir(ckpt)
    record, shuffled = _eval(run, "--control", "shuffled-kv")
    matched_record, matched = _eval(run, "--control", "shuffled-kv", "--donors", "length-matched")
    assert hash_dir(ckpt) == before
    assert record["control"] == "shuffled-kv" and record["donors"] == "random"
    assert matched_record["donors"] == "length-matched"
    # By hand: each test row shows its donor's two candidates (in the donor's order) under its own label.
    session = _session(run)
    ids = session.splits["test"]
    order = donors(len(ids), session.cfg.seed)
    substituted = []
    for i, row_id in enumerate(ids):
        rec, donor = session.records[row_id], session.records[ids[order[i]]]
        (a1, g1), (a2, g2) = donor.candidates()
        shown = {"correct_answer": a2, "correct_argument": g2, "incorrect_answer": a1, "incorrect_argument": g1} \
            if rec.swapped else {"correct_answer": a1, "correct_argument": g1, "incorrect_answer": a2,
                                 "incorrect_argument": g2}
        substituted.append(dataclasses.replace(rec, **shown))
    _close(shuffled, _predict_records(session, substituted))
    _, plain = _eval(run)
    assert all(shuffled[r] != pytest.approx(plain[r], rel=1e-6, abs=1e-12) for r in plain)


def test_control_predictions_are_the_same_with_the_fast_path_on_and_off(run):
    for control in ("swapped-kv", "shuffled-kv"):
        fast, slow = _session(run, control), _session(run, control, fast_path="off")
        assert fast.settings.variant == "joint"  # the run's adapters and step; only the examples follow the control
        batch = collate(fast.examples["test"], fast.tokenizer.pad_token_id)
        assert fast.step.path == steps.path_for(fast.step, batch) == steps.FAST
        a, b = _by_row(predict(fast, "test")), _by_row(predict(slow, "test"))
        assert a.keys() == b.keys()
        for row in a:
            assert a[row] == pytest.approx(b[row], rel=1e-6, abs=1e-12), (control, row)


def test_control_on_another_variant_is_one_line_exit_2(run, tmp_path, capsys):
    text = (run / "config.yaml").read_text()
    assert "variant: joint" in text
    for variant in ("text-only", "swapped-kv", "shared"):
        other = tmp_path / variant
        other.mkdir()
        (other / "config.yaml").write_text(text.replace("variant: joint", f"variant: {variant}", 1))
        assert main(["eval", str(other), "--control", "swapped-kv"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"trained as {variant}" in err[0] and "joint or frozen-arguer" in err[0], err
    assert main(["eval", str(run), "--donors", "length-matched"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--donors applies only with --control shuffled-kv" in err[0]


def test_summary_holds_the_baselines_of_its_test_rows(run):
    summary = json.loads((run / "summary.json").read_text())
    b = summary["baselines"]
    assert b["split"] == "test" and b["predictions"] == f"predictions/test-{summary['test_at_end']['samples']}.csv"
    splits = json.loads((run / "splits.json").read_text())
    records = run_records(run)
    test_rows = rundir.read_predictions(run / b["predictions"])["row_id"]
    expected = baselines([records[i] for i in splits["train"]], [records[i] for i in test_rows])
    assert {k: v for k, v in b.items() if k not in ("split", "predictions")} == expected
    assert b["n"] == 4 and b["n_train"] == 8
    assert "   test baselines on 4 rows: length-only" in format_summary(summary, "joint").splitlines()[-1]


def test_breakdown_prints_the_baselines_of_its_rows(run, capsys):
    assert main(["breakdown", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("   test baselines on 4 rows: length-only") for line in lines) == 1


def test_length_matched_donors_by_hand():
    # keys (len1 - len2, len1 + len2): 0 (0, 10), 1 (6, 12), 2 (-1, 11), 3 (5, 13), 4 (0, 4)
    # order 2, 4, 0, 3, 1; odd: a cycle at position 2 * ((5 - 3) // 4) = 0 (2 -> 4 -> 0 -> 2), then 3 <-> 1
    assert length_matched_donors([(5, 5), (9, 3), (5, 6), (9, 4), (2, 2)]) == [2, 3, 4, 1, 0]
    assert length_matched_donors([(3, 1), (1, 3), (3, 2), (1, 2)]) == [2, 3, 0, 1]  # order 1, 3, 2, 0
    assert length_matched_donors([(1, 1), (1, 1), (1, 1)]) == [1, 2, 0]
    assert length_matched_donors([(4, 4)]) == [0] and length_matched_donors([]) == []


def _gap(lengths, order) -> int:
    """Summed length mismatch, over rows, between each row's candidates and its donor's."""
    return sum(abs(lengths[i][0] - lengths[d][0]) + abs(lengths[i][1] - lengths[d][1]) for i, d in enumerate(order))


def test_length_matched_donors_is_a_derangement_closer_in_length_than_random():
    rng = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 10, 51):
        lengths = [tuple(torch.randint(5, 60, (2,), generator=rng).tolist()) for _ in range(n)]
        matched = length_matched_donors(lengths)
        assert sorted(matched) == list(range(n)) and all(matched[i] != i for i in range(n))
        if n > 7:
            assert _gap(lengths, matched) < _gap(lengths, donors(n, 0))


def test_build_examples_takes_the_donors_the_config_names():
    from cot_transplant.models import load_tokenizer

    records = make_records(9)
    ids = list(range(9))
    for how in DONORS:
        cfg = tiny_cfg("variant=shuffled-kv", f"transplant.donors={how}")
        tokenizer = load_tokenizer(cfg.model.name)
        template = get_template(cfg.prompt.template, tokenizer, None)
        plain, _ = build_examples(records, ids, cfg, template, tokenizer, None, variant="joint")
        shuffled, _ = build_examples(records, ids, cfg, template, tokenizer, None)
        order = donor_order(records, cfg, template, tokenizer)
        expected = (donors(9, cfg.seed) if how == "random"
                    else length_matched_donors([candidate_lengths(e) for e in plain]))
        assert order == expected
        for i, ex in enumerate(shuffled):  # each row carries its donor's arguer passes
            assert [e.ids for e in ex.arguer] == [e.ids for e in plain[order[i]].arguer]
            assert ex.label == records[i].label


def test_donor_and_control_choices_match_the_recipe():
    from cot_transplant.commands.train import CONTROLS as CLI_CONTROLS, DONORS as CLI_DONORS
    from cot_transplant.train.evaluate_checkpoint import CONTROLS

    assert CLI_DONORS == DONORS and CLI_CONTROLS == CONTROLS


def test_checkpoint_chosen_is_the_validation_choice(run, capsys):
    # The fixture evaluates test only, so the choice is the final evaluation: the latest checkpoint.
    latest = rundir.latest_checkpoint(run)
    _, plain = _eval(run)
    assert main(["eval", str(run), "--split", "test", "--checkpoint", "chosen"]) == 0
    _close(_by_row(rundir.read_predictions(run / f"eval-{latest.name}-test.csv")), plain)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(run), "--checkpoint", "best"])
    assert exc.value.code == 2 and "'chosen'" in capsys.readouterr().err
