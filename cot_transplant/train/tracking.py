"""Experiment trackers beside metrics.jsonl (`run.loggers`): TensorBoard, Weights & Biases, MLflow.

Every tracker gets the numeric grouped keys of each metrics.jsonl record (`train/loss`, `val/f_c`, ...) at
its `samples`; W&B and MLflow also get the resolved config with its provenance (git hash) at the start and
the curves figure at the end. W&B and MLflow are optional extras, imported only when named. Nothing leaves the machine unless the environment asks: W&B runs offline under RUN/wandb/
(`WANDB_MODE`, `WANDB_DIR` override), MLflow writes a SQLite store RUN/mlflow.db with artifacts under
RUN/mlartifacts/ (`MLFLOW_TRACKING_URI` overrides). RUN/tracking.json keeps each tracker's run id, so a
resumed run continues the same tracker run. docs/tracking.md has the details.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from cot_transplant.config import Config, to_dict
from cot_transplant.errors import UserError
from cot_transplant.provenance import stamp
from cot_transplant.runs.rundir import atomic_write_text

PROJECT = "cot-transplant"  # W&B project and MLflow experiment unless WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME say
EXTRAS = ("wandb", "mlflow")  # the loggers that need an optional extra of the same name


def check_installed(loggers: list[str]) -> None:
    """Raise UserError, before anything runs, for a logger whose package is not installed."""
    for name in loggers:
        if name in EXTRAS and importlib.util.find_spec(name) is None:
            raise UserError(f"run.loggers: '{name}' needs the {name} package: pip install 'cot-transplant[{name}]' "
                            f"(or drop {name} from run.loggers)")


def scalars(record: dict) -> dict[str, float]:
    """The grouped metrics of a metrics.jsonl record (`train/loss`, `val/f_c`, ...) that have a number."""
    return {k: v for k, v in record.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def open_trackers(run: Path, cfg: Config, resumed: bool) -> list:
    """One tracker per `cfg.run.loggers` entry; a `resumed` run continues the tracker runs it started."""
    ids_path = run / "tracking.json"
    ids = json.loads(ids_path.read_text(encoding="utf-8")) if resumed and ids_path.is_file() else {}
    kinds = {"tensorboard": TensorBoard, "wandb": Wandb, "mlflow": Mlflow}
    trackers = [kinds[name](run, cfg, ids.get(name)) for name in cfg.run.loggers]
    ids = {name: t.run_id for name, t in zip(cfg.run.loggers, trackers) if t.run_id is not None}
    if ids:
        atomic_write_text(ids_path, json.dumps(ids))
    return trackers


class TensorBoard:
    """events.out.tfevents.* in the run directory (the config and figure stay files beside them)."""

    run_id = None

    def __init__(self, run: Path, cfg: Config, run_id: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run))

    def log(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["samples"])

    def close(self, figure: Path | None = None) -> None:
        self.writer.close()


class Wandb:
    """A W&B run, offline in RUN/wandb/ unless WANDB_MODE / WANDB_DIR say otherwise; `samples` is the x-axis.

    A resumed run opens the same run id again (offline: a second directory beside the first, with that id).
    """

    def __init__(self, run: Path, cfg: Config, run_id: str | None = None):
        import wandb

        env = os.environ.get  # read here: wandb reads its environment once per process
        try:
            self.run = wandb.init(dir=env("WANDB_DIR") or str(run), mode=env("WANDB_MODE") or "offline",
                                  project=env("WANDB_PROJECT") or PROJECT, name=run.name, id=run_id, resume="allow",
                                  reinit="create_new", config={**to_dict(cfg), "_provenance": stamp()})
        except wandb.Error as exc:  # e.g. WANDB_MODE=online without a login
            raise UserError(f"run.loggers: wandb could not start: {exc}".splitlines()[0]) from None
        self.run_id = self.run.id
        self.run.define_metric("samples")
        self.run.define_metric("*", step_metric="samples")

    def log(self, record: dict) -> None:
        self.run.log({**scalars(record), "samples": record["samples"]})

    def close(self, figure: Path | None = None) -> None:
        if figure is not None:
            import wandb

            self.run.log({"curves": wandb.Image(str(figure))})
        self.run.finish()


class Mlflow:
    """An MLflow run in RUN/mlflow.db (SQLite; artifacts in RUN/mlartifacts/) unless MLFLOW_TRACKING_URI says.

    The config goes in as params (dotted keys) when the run starts, and as config.yaml among the artifacts at
    every start (a run resumed to train further changes `train.max_samples`; MLflow params cannot change).
    """

    def __init__(self, run: Path, cfg: Config, run_id: str | None = None):
        from mlflow.entities import RunStatus
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.client = MlflowClient(tracking_uri=uri or f"sqlite:///{(run / 'mlflow.db').resolve()}")
        try:
            experiment_id = self._experiment(run, uri)
        except MlflowException as exc:  # e.g. an unreachable MLFLOW_TRACKING_URI
            raise UserError(f"run.loggers: mlflow could not start: {exc}".splitlines()[0]) from None
        if run_id is not None:
            try:
                self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            except MlflowException:  # the tracking store changed since: start a new run there
                run_id = None
        self.run_id = run_id if run_id is not None else self._new_run(experiment_id, run, cfg)
        if (run / "config.yaml").is_file():
            self.client.log_artifact(self.run_id, str(run / "config.yaml"))

    def _new_run(self, experiment_id: str, run: Path, cfg: Config) -> str:
        """A run named as the run directory, tagged with the provenance, the config as dotted params; its id."""
        from mlflow.entities import Param

        prov = stamp()
        tags = {"mlflow.source.git.commit": prov["git"] or "unknown",
                **{f"cot_transplant.{k}": str(v) for k, v in prov.items()}}
        run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        params = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                  for k, v in _dotted(to_dict(cfg)).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(run_id, params=params[i: i + 100])
        return run_id

    def _experiment(self, run: Path, uri: str | None) -> str:
        """The id of MLFLOW_EXPERIMENT_NAME (default `PROJECT`), made where missing."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        where = {} if uri else {"artifact_location": (run / "mlartifacts").resolve().as_uri()}  # beside the store
        return self.client.create_experiment(name, **where)

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        at = int(1000 * record.get("time", time.time()))
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), at, record["samples"])
                                                    for k, v in scalars(record).items()])

    def close(self, figure: Path | None = None) -> None:
        if figure is not None:
            self.client.log_artifact(self.run_id, str(figure))
        self.client.set_terminated(self.run_id)


def _dotted(tree: dict, prefix: str = "") -> dict:
    """{"train": {"optim": {"lr": x}}} -> {"train.optim.lr": x}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
