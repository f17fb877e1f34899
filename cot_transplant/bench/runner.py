"""Measure the step paths side by side: same rows, one process, interleaved rounds, medians.

For each row source, every round runs each path's train step over all rows, each path's
eval forward over all rows, and a square fp32 matmul (2048), in an order rotated by one
each round (so no path always runs first, or right after the matmul). The first
`warmup` rounds are discarded. Figures are medians over the remaining rounds.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from cot_transplant.bench.flops import (FORMULA, ModelDims, StepFlops, body_params, head_params, lora_params,
                                        matmul_flops)
from cot_transplant.bench.rows import data_rows, sample_examples, synthetic_rows
from cot_transplant.bench.steps import StepPath, select, shape_of
from cot_transplant.config import Config, load_config, to_dict
from cot_transplant.data.record import Record
from cot_transplant.errors import UserError
from cot_transplant.train.batches import Batch, collate

MATMUL_REPS = 3  # products per timed matmul entry


@dataclass(frozen=True)
class BenchOptions:
    model: str = "smollm2"
    data: str | None = None  # a data file; its rows are sampled (seeded) besides the synthetic ones
    rows: int = 4  # rows per source, run in batches of train.batch_size (eval: eval.batch_size)
    repeats: int = 5  # measured rounds per source (medians over these)
    warmup: int = 1  # discarded rounds per source
    seed: int = 0  # row sample
    synthetic: bool = True  # also measure synthetic rows
    paths: tuple[str, ...] = ()  # step paths to run (default: all registered)
    overrides: tuple[str, ...] = ()  # dotted config overrides (prompt.template=chat, lora.r=8, ...)
    matmul_n: int = 2048  # size of the square fp32 matmul timed alongside

    def __post_init__(self) -> None:
        if self.rows < 1 or self.repeats < 1 or self.warmup < 0:
            raise UserError("bench: --rows and --repeats must be >= 1, warm-up rounds >= 0")


# Two rows, so the @2 paths run one forward of two rows while the others run one row per forward.
QUICK = dict(rows=2, repeats=3, warmup=1)
# The chat template's fixed text is ~140 tokens shorter than alpaca-json's per pass (rows keep their
# own lengths); cutting rows to a token limit instead would keep only the dataset's shortest rows.
QUICK_OVERRIDES = ("prompt.template=chat", "train.batch_size=1", "eval.batch_size=1")


def bench_config(opts: BenchOptions) -> Config:
    """The run's config: defaults, `--model`, then the overrides. Joint variant, k/v sites."""
    cfg = load_config(None, [f"model.name={opts.model}", *opts.overrides])
    if cfg.variant != "joint":
        raise UserError(f"bench measures the joint step; variant={cfg.variant} is not benchmarked")
    if cfg.transplant.site == "residual":
        raise UserError("bench: transplant.site=residual is not benchmarked (the original-style step models "
                        "the k/v transplant); use kv, k or v")
    return cfg


# --- measuring ------------------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory during a block: process RSS sampled every `interval` s (CPU), or CUDA's allocator peak."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak: int | None = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        rss = _rss_bytes()
        if rss is not None and self.peak is not None:
            self.peak = max(self.peak, rss)


def _peak_rss_bytes() -> int:
    """The process's peak RSS so far (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


@functools.lru_cache(maxsize=None)
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand memory freed by earlier work back to the OS (glibc keeps freed heap pages mapped), so a
    path's RSS peak is its own and not a previous path's high-water mark. A no-op without glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of `fn()`, device work included. Nothing else runs: no heap trim, no memory sampling,
    so the allocator is as warm as in a training loop that repeats one step."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def peak_memory(fn: Callable[[], None], device: torch.device) -> int | None:
    """Peak memory during `fn()` (not timed): on CPU after `malloc_trim`, so it is this call's own high-water
    mark and not an earlier one's; the page faults that trimming causes would distort a timing."""
    if device.type == "cpu":
        release_freed_memory()
    _sync(device)
    with PeakMemory(device) as mem:
        fn()
        _sync(device)
    return mem.peak


@dataclass
class BenchRows:
    """One set of rows and the batches made of them."""

    name: str
    rows: int
    skipped: int
    train_batches: list[Batch]
    eval_batches: list[Batch]
    tokens: dict = field(default_factory=dict)
    # Batches of other sizes for paths with their own rows per forward (train and eval alike): size -> batches.
    sized: dict[int, list[Batch]] = field(default_factory=dict)

    def batches(self, path: StepPath, kind: str) -> list[Batch]:
        """The batches `path` runs for `kind` (train | eval)."""
        if path.rows_per_forward is None:
            return self.train_batches if kind == "train" else self.eval_batches
        return self.sized[path.rows_per_forward]


def make_source(name: str, records: list[Record], opts: BenchOptions, cfg: Config, template, tokenizer,
                limit: int | None, device: torch.device, sizes: tuple[int, ...] = ()) -> BenchRows:
    examples, skipped = sample_examples(records, opts.rows, opts.seed, cfg, template, tokenizer, limit)
    pad = tokenizer.pad_token_id

    def batches(size: int) -> list[Batch]:
        return [collate(examples[i: i + size], pad, cfg.transplant.fraction, device)
                for i in range(0, len(examples), size)]

    train = batches(cfg.train.batch_size)
    real = sum(e.n_tokens for e in examples)
    padded = sum(b.arguer_ids.numel() + b.chooser_ids.numel() for b in train)
    tokens = {"arguer_mean": statistics.mean(len(a.ids) for e in examples for a in e.arguer),
              "chooser_mean": statistics.mean(len(e.chooser.ids) for e in examples),
              "real_per_round": real, "padded_per_round": padded,
              "train_shapes": [[b.arguer_ids.shape[0], b.arguer_ids.shape[1], b.chooser_ids.shape[0],
                                b.chooser_ids.shape[1]] for b in train]}
    sized = {n: batches(n) for n in sorted(set(sizes))}
    return BenchRows(name, len(examples), skipped, train, batches(cfg.eval.batch_size), tokens, sized)


def _run_train(path: StepPath, model, source: BenchRows, settings, cache) -> Callable[[], None]:
    def fn() -> None:
        for batch in source.batches(path, "train"):
            path.train(model, batch, settings, cache)
    return fn


def _run_eval(path: StepPath, model, source: BenchRows, settings, cache) -> Callable[[], None]:
    def fn() -> None:
        with torch.no_grad():
            for batch in source.batches(path, "eval"):
                path.evaluate(model, batch, settings, cache)
    return fn


Timings = dict[tuple[str, str], list[float]]  # (kind, path name) -> seconds per measured round


def run_rounds(source: BenchRows, model, settings, paths: tuple[StepPath, ...], opts: BenchOptions,
               device: torch.device, log: Callable[[str], None]) -> tuple[Timings, dict]:
    """Warm-up and measured rounds, each entry once per round in rotated order: times and memory peaks.

    Peak memory comes from the warm-up rounds (or, with no warm-up, one extra round after the
    measured ones); the measured rounds only time, so trimming the heap for a clean memory peak
    never adds page faults to a timed step.
    """
    n = opts.matmul_n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def matmul() -> None:
        for _ in range(MATMUL_REPS):
            a @ b

    entries = [("train", p) for p in paths] + [("eval", p) for p in paths] + [("matmul", None)]
    own = {p.name: p.setup(settings) for p in paths}  # once per source: a path's cache fills in its warm-up
    times: Timings = {}
    peaks: dict[tuple[str, str], list[int | None]] = {}
    memory_rounds = set(range(opts.warmup)) or {opts.warmup + opts.repeats}
    rounds = opts.warmup + opts.repeats + (0 if opts.warmup else 1)
    for r in range(rounds):
        label = "" if r not in memory_rounds else " (warm-up, memory)" if r < opts.warmup else " (memory)"
        log(f"{source.name}: round {r + 1}/{rounds}{label}")
        k = r % len(entries)
        for kind, path in entries[k:] + entries[:k]:
            if kind == "matmul":
                fn = matmul
            elif kind == "train":
                model.train()
                model.zero_grad(set_to_none=True)
                fn = _run_train(path, model, source, *own[path.name])
            else:
                model.eval()
                fn = _run_eval(path, model, source, *own[path.name])
            key = (kind, path.name if path else "matmul")
            if r in memory_rounds:
                peaks.setdefault(key, []).append(peak_memory(fn, device))
            else:  # every other round is a measured one
                times.setdefault(key, []).append(timed(fn, device))
    model.zero_grad(set_to_none=True)
    model.train()
    return times, peaks


def measure_source(source: BenchRows, model, settings, paths: tuple[StepPath, ...], dims: ModelDims,
                   opts: BenchOptions, device: torch.device, log: Callable[[str], None]) -> dict:
    """Interleaved rounds over one source; the per-path figures, the matmul's, and the ratios."""
    baseline = _rss_bytes() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    times, peaks = run_rounds(source, model, settings, paths, opts, device, log)
    mm_rates = [MATMUL_REPS * matmul_flops(opts.matmul_n) / t for t in times[("matmul", "matmul")]]
    mm_rate = statistics.median(mm_rates)
    out_paths = {}
    for path in paths:
        entry = {"description": path.description}
        for kind in ("train", "eval"):
            batches = source.batches(path, kind)
            flops = sum((path.flops(shape_of(bt, settings), dims, kind == "train") for bt in batches), StepFlops(0, 0))
            ts = times[(kind, path.name)]
            t = statistics.median(ts)
            entry[kind] = {
                ("samples_per_s" if kind == "train" else "rows_per_s"): source.rows / t,
                "seconds_per_round": ts, "median_s": t,
                "flops_per_round": {"forward": flops.forward, "backward": flops.backward, "total": flops.total},
                "flops_per_row": flops.total / source.rows,
                "achieved_flop_per_s": flops.total / t, "of_matmul": flops.total / t / mm_rate,
                "peak_memory_bytes": max((p for p in peaks[(kind, path.name)] if p is not None), default=None),
            }
        out_paths[path.name] = entry
    return {"rows": source.rows, "skipped_rows": source.skipped, "tokens": source.tokens,
            "baseline_memory_bytes": baseline,
            "matmul": {"n": opts.matmul_n, "dtype": "float32", "flop_per_s": mm_rate, "per_round": mm_rates},
            "paths": out_paths, "ratios": ratios(paths, times)}


def ratios(paths: tuple[StepPath, ...], times: Timings) -> dict:
    """Train samples/s of each later path over each earlier one with the same rows per forward: the ratio of
    medians, its per-round range, the ratio of the two paths' fastest rounds (the least disturbed by other
    load), and the ratio of their eval medians."""
    out = {}
    for i, earlier in enumerate(paths):
        for later in paths[i + 1:]:
            if later.rows_per_forward != earlier.rows_per_forward:
                continue
            t_e, t_l = times[("train", earlier.name)], times[("train", later.name)]
            per_round = [e / l for e, l in zip(t_e, t_l)]  # same round: paired under the same load
            out[f"{later.name} vs {earlier.name}"] = {
                "ratio": statistics.median(t_e) / statistics.median(t_l),
                "per_round_min": min(per_round), "per_round_max": max(per_round),
                "ratio_of_best": min(t_e) / min(t_l),
                "eval_ratio": statistics.median(times[("eval", earlier.name)]) / statistics.median(
                    times[("eval", later.name)])}
    return out


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Harness:
    """What every measurement shares: `train.setup.setup_model`'s model, tokenizer, template, step settings."""

    cfg: Config
    model: torch.nn.Module
    tokenizer: object
    template: object
    settings: object  # StepSettings
    dims: ModelDims
    limit: int | None  # longest prompt allowed
    device: torch.device


def build_harness(cfg: Config) -> Harness:
    """The model exactly as `train` sets it up for `cfg` (`setup_model`: two bases, gradient checkpointing and
    the residual dtype included), with step settings that leave the choice of step to each path."""
    from cot_transplant.train.setup import setup_model

    m = setup_model(cfg)
    try:
        dims = ModelDims.from_config(m.bases[-1].config, cfg.lora.r, cfg.lora.target_modules)
        lora_params(dims)
    except (ValueError, AttributeError) as exc:
        raise UserError(f"bench: cannot count FLOPs for this model: {exc}") from None
    # Each path calls its own step; `train.fast_path=off` says so for the settings too (`reference` runs the
    # reference even where `auto` would take the fast path). No path reuses arguer states unless it says so
    # (`frozen-cached` brings its own cache).
    settings = dataclasses.replace(m.settings, fast_path="off")
    return Harness(cfg, m.model, m.tokenizer, m.template, settings, dims, m.limit, m.device)


def exact_paths(paths: tuple[StepPath, ...], cfg: Config, named: bool,
                log: Callable[[str], None]) -> tuple[StepPath, ...]:
    """`paths` without those that are not exact under `cfg`: `original-style` backpropagates once, which
    is exact only without gradient checkpointing. Raises UserError when such a path was `named`."""
    if not cfg.model.gradient_checkpointing or "original-style" not in [p.name for p in paths]:
        return paths
    why = "original-style is not exact with model.gradient_checkpointing=true (it backpropagates once)"
    if named:
        raise UserError(f"bench: {why}; leave it out of --paths")
    log(f"bench: {why}; left out")
    return tuple(p for p in paths if p.name != "original-style")


def run_bench(opts: BenchOptions, sources: dict[str, list[Record]] | None = None,
              paths: tuple[StepPath, ...] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Load the model once, build the row sources, measure each, return the result record.

    `sources` (name -> records) replaces `--data` and the synthetic rows (tests);
    `paths` replaces the registry selection.
    """
    from cot_transplant.provenance import stamp

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    cfg = bench_config(opts)
    named = paths is not None or bool(opts.paths)
    try:
        paths = paths if paths is not None else select(list(opts.paths))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    paths = exact_paths(paths, cfg, named, log)
    if sources is None:
        sources = {}
        if opts.data:
            sources[f"data: {os.path.basename(opts.data)}"] = data_rows(cfg, opts.data)
        if opts.synthetic:
            sources["synthetic"] = synthetic_rows(cfg, 2 * opts.rows + 8)
        if not sources:
            raise UserError("bench: no rows to measure; give --data or keep the synthetic rows")
    h = build_harness(cfg)
    results = {}
    for name, records in sources.items():
        source = make_source(name, records, opts, cfg, h.template, h.tokenizer, h.limit, h.device,
                             tuple(p.rows_per_forward for p in paths if p.rows_per_forward))
        results[name] = measure_source(source, h.model, h.settings, paths, h.dims, opts, h.device, log)

    dims, device = h.dims, h.device
    threads = torch.get_num_threads()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "kind": "bench", "stamp": stamp(), "options": dataclasses.asdict(opts), "config": to_dict(cfg),
        "device": (f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                   else f"cpu, {threads} threads"),
        "model": {"name": cfg.model.name, **dataclasses.asdict(dims), "body_params": body_params(dims),
                  "head_params": head_params(dims), "lora_params_per_adapter": lora_params(dims)},
        "paths": [p.name for p in paths], "flop_formula": FORMULA,
        "sources": results,
        "peak_rss_bytes": _peak_rss_bytes(),
        "wall_s": wall, "cpu_s": cpu, "cpu_threads": threads,
        # CPU seconds per wall second per thread: well below 1 on a CPU run means others shared the cores.
        "cpu_share": cpu / wall / threads if device.type == "cpu" else None,
    }
