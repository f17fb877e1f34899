"""`cot-transplant demo` end to end in-process, on a tiny model and a few synthetic rows."""

import json

from cot_transplant.analysis.demo import overlap_sentence
from cot_transplant.cli import main


def test_demo_runs_both_variants_and_writes_everything(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path), "model.name=tiny-llama", "data.synthetic.n=20", "train.max_samples=4",
            "train.accumulate_to=4", "eval.every=4", "run.progress=false", "run.tensorboard=false"]
    assert main(argv) == 0
    (root,) = tmp_path.glob("demo-*")
    for variant in ("joint", "text-only"):
        run = root / variant
        for name in ("config.yaml", "metrics.jsonl", "curves.png", "summary.json", "splits.json"):
            assert (run / name).is_file(), (variant, name)
        assert list((run / "predictions").glob("test-*.csv"))
    assert (root / "curves.png").is_file()
    assert json.loads((root / "text-only" / "splits.json").read_text())["test"] == \
        json.loads((root / "joint" / "splits.json").read_text())["test"]
    out = capsys.readouterr().out
    assert "demo summary" in out and "joint" in out and "text-only" in out and str(root) in out


def test_overlap_sentence_says_when_intervals_overlap():
    a = {"f_c_ci_low": 0.4, "f_c_ci_high": 0.7}
    assert "overlap" in overlap_sentence(a, {"f_c_ci_low": 0.6, "f_c_ci_high": 0.9}, "joint", "text-only")
    assert "do not overlap" in overlap_sentence(a, {"f_c_ci_low": 0.75, "f_c_ci_high": 0.9}, "joint", "text-only")
