"""Round structure: memory peaks come from untimed calls after a heap trim; timed calls never trim."""

import pytest
import torch

from cot_transplant.bench import runner
from cot_transplant.bench.runner import BenchOptions, BenchRows, run_rounds
from cot_transplant.bench.steps import StepPath


class _Model:
    def train(self):
        pass

    def eval(self):
        pass

    def zero_grad(self, set_to_none=True):
        pass


@pytest.mark.parametrize("warmup, repeats, trims_per_entry", [(1, 3, 1), (2, 2, 2), (0, 3, 1)])
def test_timed_calls_never_trim_and_every_entry_gets_a_memory_peak(monkeypatch, warmup, repeats, trims_per_entry):
    events = []
    monkeypatch.setattr(runner, "release_freed_memory", lambda: events.append("trim"))
    path = StepPath("p", "a fake path", train=lambda m, b, s, cache: events.append("train"),
                    evaluate=lambda m, b, s, cache: events.append("eval"), flops=None)
    source = BenchRows("fake", rows=1, skipped=0, train_batches=[None], eval_batches=[None])
    timed = runner.timed
    monkeypatch.setattr(runner, "timed", lambda fn, device: events.append("timed") or timed(fn, device))
    opts = BenchOptions(warmup=warmup, repeats=repeats, matmul_n=8)
    times, peaks = run_rounds(source, _Model(), None, (path,), opts, torch.device("cpu"), log=lambda msg: None)

    for key in (("train", "p"), ("eval", "p"), ("matmul", "matmul")):
        assert len(times[key]) == repeats
        assert len(peaks[key]) == trims_per_entry and all(p and p > 0 for p in peaks[key])
    assert events.count("trim") == 3 * trims_per_entry  # train, eval and the matmul, in memory rounds only
    assert events.count("timed") == 3 * repeats  # warm-up rounds are the memory rounds
    assert [e for e in events if e in ("train", "eval")].count("train") == warmup + repeats + (0 if warmup else 1)
    # A timed call runs its step at once: no trim (and so no page faults it causes) inside the timing.
    assert all(events[i + 1:i + 2] != ["trim"] for i, e in enumerate(events) if e == "timed")
