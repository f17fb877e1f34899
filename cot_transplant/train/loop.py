"""The training loop, written out: `train_step` (sub-batches -> summed gradients -> optimizer step), then
log / eval / checkpoint at their intervals."""

from __future__ import annotations

import math
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cot_transplant.config import Config
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir
from cot_transplant.runs.metrics import choice_metrics, prefix
from cot_transplant.train import tracking
from cot_transplant.train.adapters import adapter_params, trainable
from cot_transplant.train.batches import by_length, collate
from cot_transplant.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, save_chosen
from cot_transplant.train.distributed import Dist
from cot_transplant.train.evaluate import evaluate
from cot_transplant.train.setup import Session, setup
from cot_transplant.train.steps import SubBatchResult, announce, forward_backward


@dataclass
class Cursor:
    """Where a run stands; checkpoints save it (state.json "cursor"), so a resumed run continues exactly."""

    epoch: int = 0
    index: int = 0  # next position in the epoch's order
    samples: int = 0  # train rows stepped over
    step: int = 0  # optimizer steps, skipped ones included
    since_eval: int = 0  # samples since the last evaluation
    nonfinite_total: int = 0  # steps skipped for a non-finite loss
    nonfinite_run: int = 0  # ... in a row, up to now
    oom: int = 0  # rows skipped for out-of-memory
    scaler_skipped: int = 0  # steps skipped by loss scaling (inf/nan gradients at the scale then; it backed off)

    def advance(self, rows: int, step: dict) -> None:
        """Count one optimizer step over `rows` rows, for which `train_step` returned `step`."""
        self.samples += rows
        self.since_eval += rows
        self.oom += step["oom_rows"]
        self.scaler_skipped += int(step.get("scaler_skipped", False))
        if step["finite"]:
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
        self.step += 1


@dataclass
class Figures:
    """This process's per-row train figures since the last train log line; checkpoints save them ("accum")."""

    loss: list[float] = field(default_factory=list)
    p1: list[float] = field(default_factory=list)
    p2: list[float] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    choice: list[int] = field(default_factory=list)
    arguer_loss: list[float] = field(default_factory=list)  # adversarial only

    def add(self, batch, out: SubBatchResult) -> None:
        figures = [out.loss, out.p1, out.p2, batch.labels, batch.argument_choice]
        if out.arguer_loss is not None:
            figures.append(out.arguer_loss)
        loss, p1, p2, label, choice, *arguer = torch.stack([f.double() for f in figures]).cpu().tolist()  # one copy
        self.loss += loss
        self.p1 += p1
        self.p2 += p2
        self.label += [int(x) for x in label]
        self.choice += [int(x) for x in choice]
        for values in arguer:
            self.arguer_loss += values

    def extend(self, other: dict) -> None:
        """Append the lists of `other` (a `train_step` result or another `Figures` as a dict)."""
        for name in asdict(self):
            getattr(self, name).extend(other[name])


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


def make_scaler(cfg: Config, device: torch.device):
    """The dynamic loss scaler of `train.loss_scaling` (auto: for fp16 models), or None."""
    on = cfg.train.loss_scaling == "on" or (cfg.train.loss_scaling == "auto" and cfg.model.dtype in ("fp16", "float16"))
    return torch.amp.GradScaler(device.type) if on else None


def train_step(session: Session, optimizer: torch.optim.Optimizer, rows: list[int], lr: float, dist: Dist,
               scaler: torch.amp.GradScaler | None = None) -> dict:
    """One optimizer step over the train examples at `rows`: this process's share, in length buckets, sub-batch
    by sub-batch into gradients summed over sub-batches and processes, then AdamW at `lr`, skipped where any
    loss is non-finite.

    With a `scaler`, every sub-batch backpropagates its loss times the current loss scale through both phases
    (the arguer's phase starts from the scaled state gradients), the summed gradients are unscaled before
    clipping, and a step whose gradients overflowed is skipped while the scale backs off.

    Returns this process's per-row figures (the fields of `Figures`: "loss", "p1", "p2", "label", "choice",
    "arguer_loss"), "finite" (False: skipped), "oom_rows" (rows skipped for memory), "lr" (the optimizer's),
    and with a scaler "loss_scale" (the scale used) and "scaler_skipped".
    """
    cfg, examples = session.cfg, session.examples["train"]
    optimizer.zero_grad(set_to_none=True)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    mine = dist.shard(rows)
    if cfg.train.bucket_by_length:  # the step's summed gradient does not depend on the order
        mine = by_length(mine, examples)
    loss_scale = 1.0
    if scaler is not None:
        scaler.scale(torch.zeros((), device=session.device))  # makes its scale (once) on the model's device
        loss_scale = scaler.get_scale()
    figures, oom_rows = Figures(), 0
    for i in range(0, len(mine), cfg.train.batch_size):
        ran, skipped = _sub_batch(session, [examples[j] for j in mine[i: i + cfg.train.batch_size]], params,
                                  loss_scale / cfg.train.accumulate_to)
        for batch, out in ran:
            figures.add(batch, out)
        oom_rows += skipped
    dist.sum_grads(params)
    finite = dist.all_finite(all(map(math.isfinite, figures.loss)))
    for group in optimizer.param_groups:
        group["lr"] = lr
    scaled = {"loss_scale": loss_scale, "scaler_skipped": False} if scaler is not None else {}
    # The scaler checks gradients; with none at all (every sub-batch skipped: a non-finite loss, out of memory)
    # there is nothing to check or step, and its scale stays (the non-finite count records the step).
    scaling = scaler is not None and any(p.grad is not None for p in params)
    if scaling:
        scaler.unscale_(optimizer)  # the summed gradients are the same on every process, so is its verdict
    if finite:
        if cfg.train.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.optim.max_grad_norm)
        if scaling:
            scaler.step(optimizer)  # skipped when a gradient is inf/nan at this scale
        elif scaler is None:
            optimizer.step()
    if scaling:
        scaler.update()
        scaled["scaler_skipped"] = finite and scaler.get_scale() < loss_scale
    return {**asdict(figures), "finite": finite, "oom_rows": oom_rows, "lr": optimizer.param_groups[0]["lr"],
            **scaled}


def train(cfg: Config, config_path: str | None = None, resume: Path | None = None,
          report: Callable[[dict], dict] | None = None) -> dict:
    """Run (or resume) one training run; returns the end-of-run summary (empty on non-main processes).

    `report` completes the summary before summary.json is written (once) and the trackers close (the commands
    pass `analysis.end_of_run.report_run`, which adds the baselines and draws curves.png; the trackers then log
    that figure).
    """
    from cot_transplant.runs.summary import finish_run

    tracking.check_installed(cfg.run.loggers)
    clock, dist = _Clock(time.time()), Dist(cpu=True if cfg.model.device == "cpu" else None)
    session = setup(cfg, use="train")
    if dist.world > 1 and dist.main:
        print(f"cot-transplant: note: {dist.world} processes, each on {dist.device.type}", file=sys.stderr, flush=True)
    if dist.world > 1 and dist.device.type != session.device.type:
        raise UserError(f"model.device: the model is on {session.device} but the launched process group reduces on "
                        f"{dist.device}; leave model.device=auto under `accelerate launch`")
    announce(session.step)
    run = _open_run(cfg, config_path, resume, session, dist)
    optimizer, scaler = make_optimizer(session), make_scaler(cfg, session.device)
    cursor, figures = _start_state(run, resume, session, optimizer, dist, scaler)
    log = rundir.MetricsLog(run, tracking.open_trackers(run, cfg, resume is not None)) if dist.main else None
    n_train = len(session.examples["train"])
    target = total_samples(cfg, n_train)
    progress = _progress(cfg, target, cursor.samples, cfg.variant, dist.main)

    def checkpoint() -> None:
        rng = dist.gather_lists({"rng": [rng_state(session.device)]})["rng"]  # every process's generators
        if dist.main:
            save_checkpoint(run, cursor.step, session.model, sorted(set(trainable(cfg.variant))), optimizer,
                            {"cursor": asdict(cursor), "accum": asdict(figures), "metrics_lines": log.lines(),
                             "scaler": scaler.state_dict() if scaler is not None else None}, rng)
            rundir.prune_checkpoints(run, cfg.checkpoint.keep)
        dist.barrier()

    if resume is None and cfg.eval.at_start:
        _evaluate_splits(session, cursor.samples, run, log, dist)
    clock.mark(cursor.samples)
    with _Stop() as stop:
        while cursor.samples < target and not stop.requested:
            rows = _next_rows(cursor, n_train, cfg.seed, min(cfg.train.accumulate_to, target - cursor.samples))
            step = train_step(session, optimizer, rows, lr_at(cursor.step, cfg), dist, scaler)
            progress.update(len(rows))
            cursor.advance(len(rows), step)
            figures.extend(step)
            if cursor.step % cfg.train.log_every == 0:
                record = _train_record(Figures(**dist.gather_lists(asdict(figures))), cursor, step, clock)
                if dist.main:
                    log.write(record)
                figures = Figures()
            evaluated = eval_due(cfg, cursor.samples - len(rows), cursor.samples, cursor.since_eval)
            if evaluated or cursor.samples >= target:
                cursor.since_eval = 0
                progress.clear()
                _evaluate_splits(session, cursor.samples, run, log, dist)
            if (cursor.step % cfg.checkpoint.every == 0 or cursor.samples >= target
                    or (evaluated and cfg.checkpoint.at_eval)):
                checkpoint()
            if cursor.nonfinite_run >= cfg.train.max_nonfinite:
                checkpoint()
                _stop_nonfinite(run, cursor, log)
        if stop.requested:
            checkpoint()
    progress.close()
    if not dist.main:
        return {}
    cache = session.arguer_cache
    if cache is not None and cache.stats.hits + cache.stats.misses:
        print(f"cot-transplant: {cache.stats.line()}", file=sys.stderr)
    summary = {}
    try:
        summary = finish_run(run, cfg, time.time() - clock.start, interrupted=stop.requested,
                             counters=asdict(cursor), arguer_cache=None if cache is None else asdict(cache.stats),
                             report=report)
    finally:
        log.close(figure=summary.get("outputs", {}).get("curves"))
    return summary


def eval_due(cfg: Config, before: int, after: int, since_eval: int) -> bool:
    """Whether the step that took training from `before` to `after` samples ends at an evaluation:
    it crossed a point of `eval.at` when that is set, else `eval.every` samples have passed since the last one."""
    if cfg.eval.at is not None:
        return any(before < point <= after for point in cfg.eval.at)
    return since_eval >= cfg.eval.every


def _evaluate_splits(session: Session, samples: int, run: Path, log, dist: Dist) -> None:
    for split in session.cfg.eval.splits:
        if session.examples.get(split):
            record = evaluate(session, split, samples, run if dist.main else None, dist)
            if dist.main:
                log.write(record)
    if dist.main:  # RUN/chosen/: the adapters of the evaluation the summary will choose, once it is this one
        save_chosen(run, session.model, sorted(set(trainable(session.cfg.variant))), samples)


def _stop_nonfinite(run: Path, cursor: Cursor, log) -> None:
    if log is not None:
        log.close()
    raise UserError(f"{run}: {cursor.nonfinite_run} optimizer steps in a row had a non-finite loss; "
                    "stopped with a checkpoint. Lower train.optim.lr or check the data")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Stop:
    """Ctrl-C sets a flag; the loop finishes its current optimizer step, checkpoints and stops.

    A second Ctrl-C interrupts at once.
    """

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


@dataclass
class _Clock:
    """Wall time since the run started, and samples per second between train log lines."""

    start: float
    samples: int = 0  # at the last mark
    last: float = 0.0  # time of the last mark

    def mark(self, samples: int) -> None:
        self.samples, self.last = samples, time.time()

    def rates(self, samples: int) -> tuple[float, float]:
        """(samples per second since the last mark, seconds since the start); marks now."""
        now = time.time()
        per_s = (samples - self.samples) / max(now - self.last, 1e-9)
        self.samples, self.last = samples, now
        return per_s, now - self.start


def _open_run(cfg: Config, config_path: str | None, resume: Path | None, session: Session, dist: Dist) -> Path:
    """The run directory: the resumed one, or a new one made (and described) by the main process."""
    if resume is not None:
        return resume
    run = None
    if dist.main:
        run = rundir.make_run_dir(cfg, config_path)
        rundir.write_config(run, cfg, session.settings.spec)
        rundir.write_splits(run, session.splits, session.skipped)
    return Path(dist.broadcast(str(run) if run else None))


def _start_state(run: Path, resume: Path | None, session: Session, optimizer, dist: Dist,
                 scaler=None) -> tuple[Cursor, Figures]:
    """(cursor, train figures since the last log line): fresh, or restored from the latest checkpoint (with
    the optimizer, the random states and the loss `scaler`)."""
    if resume is None:
        return Cursor(), Figures()
    ckpt = rundir.latest_checkpoint(run)
    if ckpt is None:
        raise UserError(f"{run}: has no checkpoint to resume from; start it again with `cot-transplant train`")
    state = load_checkpoint(ckpt, session.model, optimizer, rank=dist.rank, device=session.device)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if dist.main:
        rundir.truncate_lines(run / "metrics.jsonl", state["metrics_lines"])
    dist.barrier()
    return Cursor(**state["cursor"]), Figures(**state["accum"])


def _next_rows(cursor: Cursor, n_train: int, seed: int, count: int) -> list[int]:
    """The next `count` train example indices in epoch order, advancing the cursor (and the epoch)."""
    rows: list[int] = []
    while len(rows) < count:
        if cursor.index >= n_train:
            cursor.epoch, cursor.index = cursor.epoch + 1, 0
        order = epoch_order(n_train, seed, cursor.epoch)
        take = min(count - len(rows), n_train - cursor.index)
        rows += order[cursor.index: cursor.index + take]
        cursor.index += take
    return rows


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _sub_batch(session: Session, rows: list, params: list[torch.nn.Parameter], scale: float) -> tuple[list[tuple], int]:
    """Forward/backward one sub-batch (its loss times `scale` into the .grad of `params`); on out-of-memory
    retry it split in half (train.oom_split) or skip it.

    An out-of-memory error can strike after the first backward phase has already added the chooser's
    gradients: `params`' gradients are put back as they were before the sub-batch, so a retried or skipped
    piece leaves nothing behind. Returns ([(batch, `SubBatchResult`)] for each piece that ran, rows
    skipped): the rows of a piece that could not run are counted and reported, never silently dropped.
    """
    cfg = session.cfg
    before = _grads(params)
    try:
        batch = collate(rows, session.tokenizer.pad_token_id, cfg.transplant.fraction, session.device)
        out = forward_backward(session.model, batch, session.settings, session.step, scale, session.arguer_cache)
        return [(batch, out)], 0
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
    _set_grads(params, before)
    del before
    if session.device.type == "cuda":
        torch.cuda.empty_cache()
    if cfg.train.oom_split and len(rows) > 1:
        half = len(rows) // 2
        first, lost_first = _sub_batch(session, rows[:half], params, scale)
        second, lost_second = _sub_batch(session, rows[half:], params, scale)
        return first + second, lost_first + lost_second
    print(f"cot-transplant: warning: out of memory on a sub-batch of {len(rows)} rows (rows "
          f"{[r.row_id for r in rows]}); skipped and counted in train/oom_rows. "
          "Set train.oom_split=true or lower train.batch_size", flush=True)
    return [], len(rows)


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor | None] | None:
    """A copy of `params`' gradients (None: none has one yet, so there is nothing to copy)."""
    if all(p.grad is None for p in params):
        return None
    return [None if p.grad is None else p.grad.clone() for p in params]


def _set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor | None] | None) -> None:
    """Put `_grads`' copy back (None: no gradients at all)."""
    for i, p in enumerate(params):
        p.grad = None if grads is None else grads[i]


def _train_record(figures: Figures, cursor: Cursor, step: dict, clock: _Clock) -> dict:
    """The metrics.jsonl line of the train figures since the last one; `step` is the last `train_step`'s result."""
    finite = [x for x in figures.loss if math.isfinite(x)]
    metrics = choice_metrics(figures.p1, figures.p2, figures.label, figures.choice) if figures.p1 else {}
    if figures.arguer_loss:  # adversarial only: the arguer's loss
        arguer = [x for x in figures.arguer_loss if math.isfinite(x)]
        metrics["arguer_loss"] = float(np.mean(arguer)) if arguer else None
    per_s, wall = clock.rates(cursor.samples)
    return {"kind": "train", "samples": cursor.samples, "step": cursor.step,
            "train/loss": float(np.mean(finite)) if finite else None,
            **prefix(metrics, "train"), "train/lr": step["lr"], "train/nonfinite": cursor.nonfinite_total,
            "train/oom_rows": cursor.oom,
            **({"train/loss_scale": step["loss_scale"], "train/scaler_skipped": cursor.scaler_skipped}
               if "loss_scale" in step else {}),
            "samples_per_s": per_s, "wall_s": wall, "rss_mb": _rss_mb(), "time": time.time()}


def _progress(cfg: Config, total: int, initial: int, desc: str, main: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {desc}", unit="sample",
                disable=not (cfg.run.progress and main), dynamic_ncols=True)
