"""`cot-transplant report`: one self-contained page from a small sweep of tiny runs, every section present,
nothing fetched from outside the page; missing inputs said plainly."""

from __future__ import annotations

import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from cot_transplant.analysis import report
from cot_transplant.analysis.probe_baselines import probe_baselines
from cot_transplant.analysis.probes import best_layers, probe_layers
from cot_transplant.cli import main
from cot_transplant.config import to_dict
from cot_transplant.data.synth import synthesize


def _train_helpers():
    path = Path(__file__).resolve().parents[1] / "train" / "train_helpers.py"
    spec = importlib.util.spec_from_file_location("_train_helpers_for_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Links(HTMLParser):
    """Every src/href value and every tag name of a page."""

    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """joint and text-only x 2 seeds on 12 synthetic rows (3 val, 3 test), a truncation of one run, a probe."""
    import torch

    import cot_transplant.analysis.plots as plots
    import cot_transplant.runs.records as run_records
    from cot_transplant.analysis.truncation import truncation

    root = tmp_path_factory.mktemp("report")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(to_dict(_train_helpers().tiny_cfg("train.max_samples=4", "eval.every=4"))))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_records, "load_records", lambda cfg: synthesize(12, 5, short=True))
        mp.setattr(plots, "plot_curves", lambda runs, out, **kw: out)  # per-run figures are tested elsewhere
        assert main(["sweep", str(config), "--seeds", "2", "--grid", "variant=joint,text-only", "--out",
                     str(root / "sweep"), "--n-perm", "200", "checkpoint.keep=1"]) == 0
        truncation(root / "sweep" / "joint-s0", [0.5, 1.0])
    torch.set_num_threads(threads)

    rng = np.random.default_rng(0)
    labels, groups = np.tile([1, 0], 10), np.repeat(np.arange(10), 2)
    features = {"hidden_mean": rng.normal(size=(3, 20, 4)), "kv_mean": rng.normal(size=(2, 20, 4))}
    probes = probe_layers(features, labels, groups, folds=2)
    texts = [f"{'so it is right' if y else 'so it is wrong'} step {i}" for i, y in enumerate(labels)]
    baselines = probe_baselines(texts, [len(t.split()) for t in texts], labels, groups, folds=2)
    probe = root / "probe"
    probe.mkdir()
    (probe / "probe.json").write_text(json.dumps({
        "config": {"data": "rows.jsonl", "model": "tiny-llama", "rows": 10, "folds": 2, "template": "chat"},
        "n_questions": 10, "probes": probes, "best": best_layers(probes), "baselines": baselines}))
    return root


def _pages(text: str) -> _Links:
    parser = _Links()
    parser.feed(text)
    return parser


def test_report_of_a_sweep_has_every_section_and_no_external_reference(sweep_dir, tmp_path, monkeypatch):
    # the patched rows again: the breakdown rebuilds each run's rows from its config
    import cot_transplant.runs.records as run_records

    monkeypatch.setattr(run_records, "load_records", lambda cfg: synthesize(12, 5, short=True))
    out = tmp_path / "report.html"
    assert main(["report", str(sweep_dir / "sweep"), "--probe", str(sweep_dir / "probe"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    for title in report.SECTIONS:
        assert re.search(rf"<h2>{re.escape(title)}</h2>", text), title
    page = _pages(text)
    assert "script" not in page.tags and "link" not in page.tags
    assert page.links and all(link.startswith(("data:image/png;base64,", "#")) for link in page.links)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    images = [link for link in page.links if link.startswith("data:")]
    assert len(images) >= 4  # curves, truncation, probe, breakdown

    assert 'class="missing"' not in text.split("<h2>Confound breakdown</h2>")[0].split("<h2>Truncation</h2>")[1]
    assert "joint vs text-only" in text and "seeds concatenated" in text  # the permutation tests
    assert "test f_c at val-chosen checkpoint" in text
    assert "tail text" in text and "fraction" in text  # truncation of joint-s0
    assert "best layer" in text  # the probe table
    assert "length only (characters, tokens)" in text and "text only (TF-IDF word 1-2 grams)" in text
    assert "last-step checker" in text and "error_in_last_step" in text  # the breakdown
    result = json.loads((sweep_dir / "sweep" / "sweep.json").read_text())
    joint = result["combinations"][0]["test_at_chosen"]["f_c"]
    assert f"{100 * joint['mean']:.1f}%" in text
    if report.default_reference() is not None:  # ../shared/seed-data is present in this checkout
        assert "original study (batch-averaged test curves)" not in text or "published test f_c" in text
        assert "published test f_c" in text


def test_report_says_plainly_what_is_missing(sweep_dir, tmp_path, monkeypatch, capsys):
    import cot_transplant.runs.records as run_records

    monkeypatch.setattr(run_records, "load_records", lambda cfg: synthesize(12, 5, short=True))
    monkeypatch.setattr(report, "default_reference", lambda: None)
    run = sweep_dir / "sweep" / "text-only-s1"  # no truncation, no probe
    out = tmp_path / "run.md"
    assert main(["report", str(run), "--out", str(out)]) == 0  # the format follows the suffix
    text = out.read_text(encoding="utf-8")
    for title in report.SECTIONS:
        assert f"## {title}" in text, title
    assert "No truncation.json" in text and "No probe results" in text and "No reference curves" in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures and all((out.parent / f).is_file() and not f.startswith("http") for f in figures)

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a run directory" in err[0]
    assert main(["report", str(run), "--reference", str(tmp_path / "none.csv"), "--out", str(tmp_path / "y.html")]) == 2
    assert "no such file" in capsys.readouterr().err
