"""The positive control separates `joint` from `text-only` on a tiny random model (the bundled model's
figures are in docs/results.md): the planted verdict reaches the chooser only through the transplant."""

import json

import torch

from cot_transplant.runs import rundir
from cot_transplant.runs.metrics import wilson, row_scores
from cot_transplant.train.loop import train
from train_helpers import tiny_cfg

PLANTED = ["data.synthetic.planted=true", "data.synthetic.n=80", "data.synthetic.steps=[2]", "data.synthetic.short=true",
           "data.synthetic.argument_accuracy=0.5", "data.val_fraction=0.2", "data.test_fraction=0.3",
           "train.max_samples=192", "train.batch_size=4", "train.accumulate_to=4", "loss.choice_only=true",
           "eval.every=192", "eval.at_start=false", "eval.splits=[test]", "checkpoint.every=48"]


def _test_scores(run) -> list[float]:
    (summary,) = [json.loads((run / "summary.json").read_text())]
    pred = rundir.read_predictions(run / "predictions" / f"test-{summary['test_at_end']['samples']}.csv")
    return row_scores(pred["p_cand1"], pred["p_cand2"], pred["label"]).tolist()


def test_joint_reads_the_planted_verdict_and_text_only_cannot(tmp_path, monkeypatch):
    import cot_transplant.analysis.plots as plots

    monkeypatch.setattr(plots, "plot_curves", lambda runs, out, **kw: out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for variant in ("joint", "text-only"):
            train(tiny_cfg(*PLANTED, f"variant={variant}", f"run.dir={tmp_path}", f"run.name={variant}"))
    finally:
        torch.set_num_threads(threads)
    joint, text = _test_scores(tmp_path / "joint"), _test_scores(tmp_path / "text-only")
    assert len(joint) == len(text) == 24
    joint_ci, text_ci = wilson(sum(joint), len(joint)), wilson(sum(text), len(text))
    assert joint_ci[0] > text_ci[1], (sum(joint), sum(text))
    assert 0.25 <= sum(text) / len(text) <= 0.75  # two identical candidates: no better than chance
