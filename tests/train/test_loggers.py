"""Experiment trackers (`run.loggers`): the real W&B and MLflow, offline in the run directory, read back.

Each must hold metrics.jsonl's grouped keys at their `samples`, the resolved config and the git hash, and the
curves figure; a resumed run continues the same tracker run; a missing package is one line before anything runs.
"""

import glob
import json
import math
import struct
from pathlib import Path

import pytest
import yaml

from cot_transplant.analysis.end_of_run import report_run
from cot_transplant.cli import main
from cot_transplant.config import load_config, to_dict
from cot_transplant.errors import UserError
from cot_transplant.provenance import git_hash
from cot_transplant.runs import rundir
from cot_transplant.train.loop import train
from train_helpers import tiny_cfg


def grouped(run: Path) -> list[dict]:
    """What every tracker should hold: per metrics.jsonl record, `samples` and its numeric `a/b` keys."""
    out = []
    for record in rundir.read_metrics(run):
        values = {k: v for k, v in record.items() if "/" in k and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        out.append({"samples": record["samples"], **values})
    return out


def same_rows(got: list[dict], want: list[dict]) -> bool:
    """Equal rows of numbers, to float rounding (a tracker may store them through its own encoding)."""
    return len(got) == len(want) and all(
        g.keys() == w.keys() and all(math.isclose(g[k], w[k], rel_tol=1e-12) for k in w) for g, w in zip(got, want))


@pytest.fixture
def quiet_env(monkeypatch):
    """No tracker settings from the machine: the defaults (offline, inside the run directory) apply."""
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY", "MLFLOW_TRACKING_URI",
                 "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


# --- config ------------------------------------------------------------------------------------------------


def test_loggers_default_to_tensorboard_and_run_tensorboard_is_the_older_spelling():
    assert load_config(None, []).run.loggers == ["tensorboard"]
    assert load_config(None, ["run.tensorboard=false"]).run.loggers == []
    assert load_config(None, ["run.loggers=[wandb]", "run.tensorboard=true"]).run.loggers == ["tensorboard", "wandb"]
    assert load_config(None, ["run.loggers=[mlflow, tensorboard]", "run.tensorboard=false"]).run.loggers == ["mlflow"]
    cfg = load_config(None, ["run.loggers=[wandb]"])
    assert load_config(base=to_dict(cfg)) == cfg  # the resolved config reads back as itself
    with pytest.raises(UserError, match="run.loggers"):
        load_config(None, ["run.loggers=[neptune]"])


def test_a_missing_tracker_package_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "run.loggers=[wandb]"))))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'cot-transplant[wandb]'" in err, err
    assert not (tmp_path / "r").exists()


# --- W&B ---------------------------------------------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The records of a .wandb transaction log, parsed with W&B's own protobuf.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB blocks of
    chunks, each `<crc32 u32><length u16><type u8>` + data (type 1 whole, 2/3/4 first/middle/last part).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos: pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of a block too short for a chunk header is padding
            pos += left
            continue
        parts += data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def wandb_history(records) -> list[dict]:
    return [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def test_wandb_offline_holds_the_metrics_config_git_hash_and_figure_and_a_resume_continues_it(
        tiny_rows, tmp_path, quiet_env):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'cot-transplant[wandb]')")
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "run.loggers=[wandb]"), report=report_run)
    run = tmp_path / "r"
    run_id = json.loads((run / "tracking.json").read_text())["wandb"]
    (first,) = [Path(p) for p in glob.glob(f"{run}/wandb/offline-run-*-{run_id}/run-{run_id}.wandb")]
    records = wandb_records(first)

    (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {u.key: json.loads(u.value_json) for u in start.config.update}
    assert start.run_id == run_id and start.project == "cot-transplant" and start.display_name == "r"
    assert config["train"]["optim"]["lr"] == 1e-2 and config["run"]["loggers"] == ["wandb"]
    assert config["_provenance"]["git"] == git_hash()

    history = wandb_history(records)
    logged = [{k: v for k, v in row.items() if not k.startswith("_")} for row in history if "curves/_type" not in row]
    assert same_rows(logged, grouped(run))
    (figure,) = [row for row in history if "curves/_type" in row]
    assert figure["curves/_type"] == "image-file" and (first.parent / "files" / figure["curves/path"]).is_file()

    assert main(["train", "--resume", str(run), "train.max_samples=12"]) == 0
    assert json.loads((run / "tracking.json").read_text())["wandb"] == run_id
    files = sorted(glob.glob(f"{run}/wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # offline, a resume writes a second log of the same run id
    resumed = [{k: v for k, v in row.items() if not k.startswith("_")}
               for row in wandb_history(wandb_records(Path(files[1]))) if "curves/_type" not in row]
    assert same_rows(resumed, [x for x in grouped(run) if x["samples"] > 8])


# --- MLflow ------------------------------------------------------------------------------------------------


def test_mlflow_store_in_the_run_holds_the_metrics_config_git_hash_and_figure_and_a_resume_continues_it(
        tiny_rows, tmp_path, quiet_env):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'cot-transplant[mlflow]')")
    from mlflow.tracking import MlflowClient

    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "run.loggers=[mlflow]"), report=report_run)
    run = tmp_path / "r"
    assert main(["train", "--resume", str(run), "train.max_samples=12"]) == 0

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    run_id = json.loads((run / "tracking.json").read_text())["mlflow"]
    (experiment,) = [e for e in client.search_experiments() if e.name == "cot-transplant"]
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]  # one run, resumed
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "r"
    assert tracked.data.params["train.optim.lr"] == "0.01" and tracked.data.params["run.loggers"] == '["mlflow"]'
    assert tracked.data.tags["mlflow.source.git.commit"] == (git_hash() or "unknown")

    expected = grouped(run)
    for key in {k for x in expected for k in x if k != "samples"}:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        want = sorted((x["samples"], float(x[key])) for x in expected if key in x)
        # The first attempt logged nothing past its end at 8 samples, so no point is logged twice here.
        assert [s for s, _ in history] == [s for s, _ in want], key
        assert all(math.isclose(a, b, rel_tol=1e-12) for (_, a), (_, b) in zip(history, want)), key
    assert {"curves.png", "config.yaml"} <= {a.path for a in client.list_artifacts(run_id)}
    artifacts = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert yaml.safe_load(artifacts.read_text())["train"]["max_samples"] == 12  # the config as resumed
    assert str(run) in tracked.info.artifact_uri  # kept inside the run directory


def test_the_environment_can_point_the_trackers_elsewhere(tiny_rows, tmp_path, quiet_env, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'cot-transplant[wandb]')")
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'cot-transplant[mlflow]')")
    from mlflow.tracking import MlflowClient

    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.chdir(tmp_path)  # a store without an artifact root of its own puts artifacts in ./mlruns
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep")
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "run.loggers=[wandb, mlflow]"))
    run = tmp_path / "r"
    assert not (run / "wandb").exists() and not (run / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=shared)
    tracked = client.get_run(json.loads((run / "tracking.json").read_text())["mlflow"])
    assert client.get_experiment(tracked.info.experiment_id).name == "sweep"
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "test/f_c")] == [0, 4, 8]
