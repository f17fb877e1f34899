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
from cot_transplant.train.batches import collate
from cot_transplant.train.checkpoint import load_checkpoint, save_checkpoint
from cot_transplant.train.evaluate import evaluate
from cot_transplant.train.metrics import choice_metrics, prefix
from cot_transplant.train.setup import Session, setup
from cot_transplant.train.step import train_forward_backward


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
    """Run (or resume) one training run; returns the end-of-run summary."""
    from cot_transplant.train.summary import finish_run

    t_start = time.time()
    session = setup(cfg)
    run = resume or rundir.make_run_dir(cfg, config_path)
    if resume is None:
        rundir.write_config(run, cfg)
        rundir.write_splits(run, session.splits, session.skipped)
    model, s, train_cfg = session.model, session.settings, cfg.train
    optimizer = make_optimizer(session)
    names = sorted({n for n in trainable(cfg.variant)})
    pad_id = session.tokenizer.pad_token_id
    train_ex = session.examples["train"]
    target = total_samples(cfg, len(train_ex))
    cursor = {"epoch": 0, "index": 0, "samples": 0, "step": 0, "since_eval": 0, "nonfinite_total": 0,
              "nonfinite_run": 0, "oom": 0}
    saved_accum = None
    if resume is not None:
        ckpt = rundir.latest_checkpoint(run)
        if ckpt is None:
            raise UserError(f"{run}: has no checkpoint to resume from; start it again with `cot-transplant train`")
        state = load_checkpoint(ckpt, model, optimizer)
        cursor, saved_accum = state["cursor"], state["accum"]
        rundir.truncate_lines(run / "metrics.jsonl", state["metrics_lines"])
    log = rundir.MetricsLog(run, cfg.run.tensorboard)
    progress = _progress(cfg, target, cursor["samples"], cfg.variant)
    accum = saved_accum if resume is not None else {"loss": [], "p1": [], "p2": [], "label": [], "choice": []}

    def do_eval() -> None:
        for split in cfg.eval.splits:
            if session.examples.get(split):
                log.write(evaluate(session, split, cursor["samples"], run))

    def checkpoint() -> None:
        save_checkpoint(run, cursor["step"], model, names, optimizer,
                        {"cursor": cursor, "accum": accum, "metrics_lines": log.lines()})
        rundir.prune_checkpoints(run, cfg.checkpoint.keep)

    if resume is None and cfg.eval.at_start:
        do_eval()
    t_log, samples_log = time.time(), cursor["samples"]
    with _Stop() as stop:
        while cursor["samples"] < target and not stop.requested:
            order = epoch_order(len(train_ex), cfg.seed, cursor["epoch"])
            # One optimizer step: sub-batches until `accumulate_to` rows (or the run's end).
            step_rows = min(train_cfg.accumulate_to, target - cursor["samples"])
            optimizer.zero_grad(set_to_none=True)
            done, n_before = 0, len(accum["loss"])
            while done < step_rows:
                if cursor["index"] >= len(order):
                    cursor["epoch"], cursor["index"] = cursor["epoch"] + 1, 0
                    order = epoch_order(len(train_ex), cfg.seed, cursor["epoch"])
                take = min(train_cfg.batch_size, step_rows - done, len(order) - cursor["index"])
                rows = [train_ex[i] for i in order[cursor["index"]: cursor["index"] + take]]
                for batch, (loss, p1, p2) in _sub_batch(model, rows, session, cursor, accum):
                    accum["loss"] += loss.tolist()
                    accum["p1"] += p1.tolist()
                    accum["p2"] += p2.tolist()
                    accum["label"] += batch.labels.tolist()
                    accum["choice"] += batch.argument_choice.tolist()
                cursor["index"] += take
                done += take
                progress.update(take)
            finite = all(math.isfinite(x) for x in accum["loss"][n_before:])
            if finite:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cursor["step"], cfg)
                if train_cfg.optim.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], train_cfg.optim.max_grad_norm)
                optimizer.step()
                cursor["nonfinite_run"] = 0
            else:
                cursor["nonfinite_total"] += 1
                cursor["nonfinite_run"] += 1
            cursor["step"] += 1
            cursor["samples"] += done
            cursor["since_eval"] += done
            if cursor["step"] % train_cfg.log_every == 0:
                now = time.time()
                log.write(_train_record(accum, cursor, lr_at(cursor["step"] - 1, cfg),
                                        (cursor["samples"] - samples_log) / max(now - t_log, 1e-9), now - t_start))
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
                log.close()
                raise UserError(f"{run}: {cursor['nonfinite_run']} optimizer steps in a row had a non-finite loss; "
                                "stopped with a checkpoint. Lower train.optim.lr or check the data")
        if stop.requested:
            checkpoint()
    progress.close()
    log.close()
    return finish_run(run, cfg, time.time() - t_start, interrupted=stop.requested, counters=cursor)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _sub_batch(model, rows: list, session: Session, cursor: dict, accum: dict | None = None):
    """Forward/backward one sub-batch; on out-of-memory retry it split in half (train.oom_split) or count it.

    Yields (batch, (loss, P1, P2)) for each piece that ran; rows of a piece that could not run are
    counted in cursor["oom"] and reported, never silently dropped.
    """
    cfg = session.cfg
    batch = _to(collate(rows, session.tokenizer.pad_token_id, cfg.transplant.fraction), session.device)
    try:
        yield batch, train_forward_backward(model, batch, session.settings, scale=1.0 / cfg.train.accumulate_to,
                                            extra=accum)  # adversarial: appends accum["arguer_loss"]
        return
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
    if session.device.type == "cuda":
        torch.cuda.empty_cache()
    if cfg.train.oom_split and len(rows) > 1:
        half = len(rows) // 2
        yield from _sub_batch(model, rows[:half], session, cursor, accum)
        yield from _sub_batch(model, rows[half:], session, cursor, accum)
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


def _progress(cfg: Config, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {desc}", unit="sample", disable=not cfg.run.progress,
                dynamic_ncols=True)
