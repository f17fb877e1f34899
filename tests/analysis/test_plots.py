"""Curves figures from run directories alone, the `plot` command, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cot_transplant.analysis.plots import (
    clip_reference,
    load_run,
    plot_ci_band,
    read_metrics,
    read_reference,
    record_split,
    rolling_mean,
    run_label,
)
from cot_transplant.cli import main
from cot_transplant.errors import UserError

SEED_CURVES = Path(__file__).resolve().parents[2].parent / "shared/seed-data/seed_test_curves.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(step: int, f_c: float | None) -> dict:
    return {"kind": "train", "samples": 128 * step, "step": step, "train/loss": 0.7 - 0.001 * step,
            "train/f_c": f_c, "train/f_c_oc": None, "train/f_c_oi": 0.5, "train/o_c": 0.3, "train/o_i": 0.2,
            "train/lr": 3e-4, "time": 2.0 * step, "samples_per_s": 64.0}


def _eval(split: str, step: int, f_c: float) -> dict:
    keys = {"loss": 0.69, "f_c": f_c, "f_c_oc": f_c + 0.1, "f_c_oi": f_c - 0.2, "o_c": 0.3, "o_i": None,
            "auroc": f_c, "base_rate": 0.64, "agree": 0.7, "f_c_ci_low": f_c - 0.05, "f_c_ci_high": f_c + 0.05}
    return {"kind": "eval", "split": split, "samples": 128 * step, **{f"{split}/{k}": v for k, v in keys.items()},
            "time": 2.0 * step}


def write_run(path: Path, splits=("val", "test"), config: str | None = None, n_steps: int = 40) -> Path:
    """A synthetic run directory: train lines every step, evals every 4 steps."""
    path.mkdir(parents=True)
    lines = []
    for step in range(1, n_steps + 1):
        lines.append(_train(step, [0.0, 0.5, 1.0][step % 3]))
        if step % 4 == 0:
            lines += [_eval(split, step, 0.5 + step / 200) for split in splits]
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if config is not None:
        (path / "config.yaml").write_text(config)
    return path


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000  # a rendered figure, not an empty canvas


def test_rolling_mean_hand_computed():
    assert rolling_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    assert rolling_mean(np.array([1.0, np.nan, 3.0]), 2).tolist() == [1.0, 1.0, 3.0]  # NaN ignored
    assert np.isnan(rolling_mean(np.array([np.nan, np.nan]), 2)).all()
    assert rolling_mean(np.array([1.0, 5.0]), 1).tolist() == [1.0, 5.0]


def test_read_metrics_skips_unfinished_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(_train(1, 0.5)) + "\n\n" + '{"kind": "train", "sam')
    assert len(read_metrics(path)) == 1


@pytest.mark.parametrize("bad, message", [
    ('{"kind": "train", "sam\n', "not valid JSON"),
    ("[1, 2]\n", "expected a JSON object"),
    ('{"kind": "eval", "split": "val"}\n', "no numeric 'samples'"),
])
def test_read_metrics_names_file_and_line(tmp_path, bad, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(_train(1, 0.5)) + "\n" + bad + json.dumps(_train(2, 0.5)) + "\n")
    with pytest.raises(UserError, match=f"metrics.jsonl:2: .*{message}"):
        read_metrics(path)


def test_run_label(tmp_path):
    assert run_label(write_run(tmp_path / "bare")) == "bare"
    named = write_run(tmp_path / "a", config="run:\n  name: seed1\nvariant: masked\n")
    assert run_label(named) == "seed1 (masked)"
    nested = write_run(tmp_path / "b", config="run: {name: seed2}\nvariant: {name: unmasked, mask: false}\n")
    assert run_label(nested) == "seed2 (unmasked)"
    broken = write_run(tmp_path / "c", config="run: [unclosed\n")
    assert run_label(broken) == "c"
    default_name = write_run(tmp_path / "demo-text-only-20250101", config="run: {name: null}\nvariant: text-only\n")
    assert run_label(default_name) == "demo-text-only-20250101"  # the variant is in the name already
    other = write_run(tmp_path / "demo-unmasked-1", config="variant: masked\n")
    assert run_label(other) == "demo-unmasked-1 (masked)"


def test_read_reference_shared_csv():
    if not SEED_CURVES.is_file():
        pytest.skip(f"{SEED_CURVES} not present")
    ref = read_reference(SEED_CURVES)
    assert set(ref) == {"unmasked", "masked"}
    assert len(ref["unmasked"]["f_c"]) == 201 and len(ref["masked"]["f_c"]) == 99
    assert np.all(np.diff(ref["unmasked"]["samples_trained"]) > 0)


def test_plot_one_run_default_out(tmp_path, capsys):
    run = write_run(tmp_path / "run1", config="run:\n  name: seed1\nvariant: unmasked\n")
    assert main(["plot", str(run), "--smooth", "5"]) == 0
    assert_png(run / "curves.png")
    assert capsys.readouterr().out.strip() == str(run / "curves.png")


def test_plot_several_runs_with_reference(tmp_path, monkeypatch):
    if not SEED_CURVES.is_file():
        pytest.skip(f"{SEED_CURVES} not present")
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", splits=("val",))  # no test split: its val curves are shown
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(a), str(b), "--reference", str(SEED_CURVES)]) == 0
    assert_png(tmp_path / "curves.png")  # several runs: written to the working directory


def test_clip_reference_keeps_points_up_to_the_limit():
    ref = {"unmasked": {"samples_trained": np.array([0.0, 128.0, 256.0, 384.0]), "f_c": np.array([0.5, 0.6, 0.7, 0.8])}}
    clipped = clip_reference(ref, 256)
    assert clipped["unmasked"]["samples_trained"].tolist() == [0.0, 128.0, 256.0]
    assert clipped["unmasked"]["f_c"].tolist() == [0.5, 0.6, 0.7]
    assert clip_reference(ref, None)["unmasked"]["f_c"].tolist() == [0.5, 0.6, 0.7, 0.8]


def test_plot_with_max_samples(tmp_path):
    if not SEED_CURVES.is_file():
        pytest.skip(f"{SEED_CURVES} not present")
    a = write_run(tmp_path / "a")
    out = tmp_path / "short.png"
    assert main(["plot", str(a), "--reference", str(SEED_CURVES), "--max-samples", "512", "--out", str(out)]) == 0
    assert_png(out)


def test_plot_eval_only_run(tmp_path):
    run = tmp_path / "evals"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(_eval("val", s, 0.6)) + "\n" for s in (4, 8, 12)))
    assert main(["plot", str(run), "--out", str(tmp_path / "out" / "fig.png")]) == 0
    assert_png(tmp_path / "out" / "fig.png")


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    malformed = write_run(tmp_path / "malformed")
    with (malformed / "metrics.jsonl").open("a") as f:
        f.write("not json\n" + json.dumps(_train(99, 0.5)) + "\n")
    no_records = tmp_path / "norecords"
    no_records.mkdir()
    (no_records / "metrics.jsonl").write_text('{"kind": "config"}\n')
    good = write_run(tmp_path / "good")
    return {
        "missing dir": (["plot", str(tmp_path / "nope")], "not a directory"),
        "no metrics.jsonl": (["plot", str(empty)], "no metrics.jsonl"),
        # 40 train + 20 eval lines, then the bad one
        "malformed line": (["plot", str(malformed)], "metrics.jsonl:61: not valid JSON"),
        "no records": (["plot", str(no_records)], "no train or eval records"),
        "missing reference": (["plot", str(good), "--reference", str(tmp_path / "x.csv")], "x.csv: no such file"),
        "smooth 0": (["plot", str(good), "--smooth", "0"], "--smooth"),
        "not png": (["plot", str(good), "--out", str(tmp_path / "fig.pdf")], "must name a .png"),
    }


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("run,samples_trained\nx,1\n")
    cases = _bad_inputs(tmp_path)
    cases["reference columns"] = (["plot", str(tmp_path / "good"), "--reference", str(bad_csv)], "lacks column")
    for name, (argv, message) in cases.items():
        assert _exit_code(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (name, err)


def _exit_code(argv: list[str]) -> int:
    """main's return code, or the code argparse exits with on a bad option."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_plot_ci_band(tmp_path):
    runs = [load_run(write_run(tmp_path / f"seed{i}")) for i in range(3)]
    val = [[(r["samples"], r.get("val/f_c")) for r in run.evals if record_split(r) == "val"] for run in runs]
    assert all(val)
    curves = {"lr=3e-4": val, "lr=1e-4": val[:1]}
    out = plot_ci_band(curves, tmp_path / "band.png", base_rate=0.64, title="sweep")
    assert_png(out)
