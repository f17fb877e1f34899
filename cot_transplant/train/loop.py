"""The training loop, written out: sub-batches -> accumulate -> optimizer step -> log / eval / checkpoint."""

from __future__ import annotations

import math
import resource
import signal
import time
from pathlib import Path

import numpy as np
import torch

from cot_transplant.config import Config
from cot_transplant.errors import UserError
from cot_transplant.train import rundir
from cot_transplant.train.adapters import adapter_params, trainable
from cot_transplant.train.batches import by_length, collate
from cot_transplant.train.checkpoint import load_checkpoint, save_checkpoint
from cot_transplant.train.distributed import Dist
from cot_transplant.train.evaluate import evaluate
from cot_transplant.train.metrics import choice_metrics, prefix
from cot_transplant.train.setup import Session, setup
from cot_transplant.train.select import announce, forward_backward


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of train examples in one epoch (a pure function of seed and epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n).tolist()


def make_optimizer(session: Session) -> torch.optim.Optimizer:
    o = session.cfg.train.optim
    params = [p for name in trainable(session.cfg.variant) for _, p in adapter_params(session.model, name)]
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def lr_at(step: int, cfg: Config) -> float:
    warm = cfg.train.optim.warmup_steps
    return cfg.train.optim.lr * (min(1.0, (step + 1) / warm) if warm else 1.0)


def total_samples(cfg: Config, n_train: int) -> int:
    if cfg.train.max_samples is not None:
        return cfg.train.max_samples
    return max(1, math.ceil(cfg.train.epochs * n_train))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Stop:
    """Ctrl-C sets a flag; the loop checkpoints and stops at the next sub-batch boundary."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False


def train(cfg: Config, config_path: str | None = None, resume: Path | None = None) -> dict:
    """Run (or resume) one training run; returns the end-of-run summary (empty on non-main processes)."""
    from cot_transplant.train.summary import finish_run

    t_start = time.time()
    dist = Dist()
    session = setup(cfg)
    announce(session.model, session.settings)
    run = _open_run(cfg, config_path, resume, session, dist)
    model, train_cfg, train_ex = session.model, cfg.train, session.examples["train"]
    optimizer = make_optimizer(session)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = sorted(set(trainable(cfg.variant)))
    target = total_samples(cfg, len(train_ex))
    cursor, accum = _start_state(run, resume, model, optimizer, dist)
    log = rundir.MetricsLog(run, cfg.run.tensorboard) if dist.main else None
    progress = _progress(cfg, target, cursor["samples"], cfg.variant, dist.main)

    def do_eval() -> None:
        for split in cfg.eval.splits:
            if session.examples.get(split):
                record = evaluate(session, split, cursor["samples"], run if dist.main else None, dist)
                if dist.main:
                    log.write(record)

    def checkpoint() -> None:
        if dist.main:
            save_checkpoint(run, cursor["step"], model, names, optimizer,
                            {"cursor": cursor, "accum": accum, "metrics_lines": log.lines()})
            rundir.prune_checkpoints(run, cfg.checkpoint.keep)
        dist.barrier()

    if resume is None and cfg.eval.at_start:
        do_eval()
    t_log, samples_log = time.time(), cursor["samples"]
    with _Stop() as stop:
        while cursor["samples"] < target and not stop.requested:
            # One optimizer step over `accumulate_to` rows (or the run's rest), shared out across processes.
            step_rows = _next_rows(cursor, len(train_ex), cfg.seed, min(train_cfg.accumulate_to, target - cursor["samples"]))
            optimizer.zero_grad(set_to_none=True)
            n_before = len(accum["loss"])
            mine = dist.shard(step_rows)
            if train_cfg.bucket_by_length:  # the step's summed gradient does not depend on the order
                mine = by_length(mine, train_ex)
            for i in range(0, len(mine), train_cfg.batch_size):
                rows = [train_ex[j] for j in mine[i: i + train_cfg.batch_size]]
                for batch, out in _sub_batch(model, rows, session, cursor):
                    _extend(accum, batch, out)
            progress.update(len(step_rows))
            dist.sum_grads(params)
            _optimizer_step(optimizer, cursor, cfg, dist.all_finite(all(map(math.isfinite, accum["loss"][n_before:]))))
            cursor["samples"] += len(step_rows)
            cursor["since_eval"] += len(step_rows)
            if cursor["step"] % train_cfg.log_every == 0:
                now = time.time()
                record = _train_record(dist.gather_lists(accum), cursor, lr_at(cursor["step"] - 1, cfg),
                                       (cursor["samples"] - samples_log) / max(now - t_log, 1e-9), now - t_start)
                if dist.main:
                    log.write(record)
                accum = {k: [] for k in accum}
                t_log, samples_log = now, cursor["samples"]
            if cursor["since_eval"] >= cfg.eval.every or cursor["samples"] >= target:
                cursor["since_eval"] = 0
                progress.clear()
                do_eval()
            if cursor["step"] % cfg.checkpoint.every == 0 or cursor["samples"] >= target:
                checkpoint()
            if cursor["nonfinite_run"] >= train_cfg.max_nonfinite:
                checkpoint()
                if log is not None:
                    log.close()
                raise UserError(f"{run}: {cursor['nonfinite_run']} optimizer steps in a row had a non-finite loss; "
                                "stopped with a checkpoint. Lower train.optim.lr or check the data")
        if stop.requested:
            checkpoint()
    progress.close()
    if not dist.main:
        return {}
    log.close()
    return finish_run(run, cfg, time.time() - t_start, interrupted=stop.requested, counters=cursor)


def _open_run(cfg: Config, config_path: str | None, resume: Path | None, session: Session, dist: Dist) -> Path:
    """The run directory: the resumed one, or a new one made (and described) by the main process."""
    if resume is not None:
        return resume
    run = None
    if dist.main:
        run = rundir.make_run_dir(cfg, config_path)
        rundir.write_config(run, cfg)
        rundir.write_splits(run, session.splits, session.skipped)
    return Path(dist.broadcast(str(run) if run else None))


def _start_state(run: Path, resume: Path | None, model, optimizer, dist: Dist) -> tuple[dict, dict]:
    """(cursor, accumulated train figures): fresh, or restored from the latest checkpoint."""
    cursor = {"epoch": 0, "index": 0, "samples": 0, "step": 0, "since_eval": 0, "nonfinite_total": 0,
              "nonfinite_run": 0, "oom": 0}
    accum = {"loss": [], "p1": [], "p2": [], "label": [], "choice": []}
    if resume is None:
        return cursor, accum
    ckpt = rundir.latest_checkpoint(run)
    if ckpt is None:
        raise UserError(f"{run}: has no checkpoint to resume from; start it again with `cot-transplant train`")
    state = load_checkpoint(ckpt, model, optimizer)
    if dist.main:
        rundir.truncate_lines(run / "metrics.jsonl", state["metrics_lines"])
    dist.barrier()
    return state["cursor"], state["accum"]


def _next_rows(cursor: dict, n_train: int, seed: int, count: int) -> list[int]:
    """The next `count` train example indices in epoch order, advancing the cursor (and the epoch)."""
    rows: list[int] = []
    while len(rows) < count:
        if cursor["index"] >= n_train:
            cursor["epoch"], cursor["index"] = cursor["epoch"] + 1, 0
        order = epoch_order(n_train, seed, cursor["epoch"])
        take = min(count - len(rows), n_train - cursor["index"])
        rows += order[cursor["index"]: cursor["index"] + take]
        cursor["index"] += take
    return rows


def _extend(accum: dict, batch, out) -> None:
    accum["loss"] += out.loss.tolist()
    accum["p1"] += out.p1.tolist()
    accum["p2"] += out.p2.tolist()
    accum["label"] += batch.labels.tolist()
    accum["choice"] += batch.argument_choice.tolist()
    if out.arguer_loss is not None:
        accum.setdefault("arguer_loss", []).extend(out.arguer_loss.tolist())


def _optimizer_step(optimizer, cursor: dict, cfg: Config, finite: bool) -> None:
    """Step (or skip and count a non-finite loss), then advance the step counter."""
    if finite:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cursor["step"], cfg)
        if cfg.train.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                           cfg.train.optim.max_grad_norm)
        optimizer.step()
        cursor["nonfinite_run"] = 0
    else:
        cursor["nonfinite_total"] += 1
        cursor["nonfinite_run"] += 1
    cursor["step"] += 1


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _sub_batch(model, rows: list, session: Session, cursor: dict):
    """Forward/backward one sub-batch; on out-of-memory retry it split in half (train.oom_split) or count it.

    Yields (batch, `SubBatchResult`) for each piece that ran; rows of a piece that could not run are
    counted in cursor["oom"] and reported, never silently dropped.
    """
    cfg = session.cfg
    batch = _to(collate(rows, session.tokenizer.pad_token_id, cfg.transplant.fraction), session.device)
    try:
        yield batch, forward_backward(model, batch, session.settings, scale=1.0 / cfg.train.accumulate_to)
        return
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
    if session.device.type == "cuda":
        torch.cuda.empty_cache()
    if cfg.train.oom_split and len(rows) > 1:
        half = len(rows) // 2
        yield from _sub_batch(model, rows[:half], session, cursor)
        yield from _sub_batch(model, rows[half:], session, cursor)
        return
    cursor["oom"] += len(rows)
    print(f"cot-transplant: warning: out of memory on a sub-batch of {len(rows)} rows (rows "
          f"{[r.row_id for r in rows]}); skipped and counted ({cursor['oom']} rows so far). "
          "Set train.oom_split=true or lower train.batch_size", flush=True)


def _train_record(accum: dict, cursor: dict, lr: float, per_s: float, wall: float) -> dict:
    finite = [x for x in accum["loss"] if math.isfinite(x)]
    metrics = choice_metrics(accum["p1"], accum["p2"], accum["label"], accum["choice"]) if accum["p1"] else {}
    arguer = [x for x in accum.get("arguer_loss", []) if math.isfinite(x)]  # adversarial only: the arguer's loss
    if accum.get("arguer_loss"):
        metrics["arguer_loss"] = float(np.mean(arguer)) if arguer else None
    return {"kind": "train", "samples": cursor["samples"], "step": cursor["step"],
            "train/loss": float(np.mean(finite)) if finite else None,
            **prefix(metrics, "train"), "train/lr": lr, "train/nonfinite": cursor["nonfinite_total"],
            "train/oom_rows": cursor["oom"],
            "samples_per_s": per_s, "wall_s": wall, "rss_mb": _rss_mb(), "time": time.time()}


def _to(batch, device):
    if device.type == "cpu":
        return batch
    for name in ("labels", "argument_choice", "chooser_ids", "chooser_mask", "arguer_ids", "arguer_mask"):
        setattr(batch, name, getattr(batch, name).to(device))
    return batch


def _progress(cfg: Config, total: int, initial: int, desc: str, main: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {desc}", unit="sample",
                disable=not (cfg.run.progress and main), dynamic_ncols=True)
