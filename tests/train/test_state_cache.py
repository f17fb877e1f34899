"""The arguer state cache: where it applies, bit-for-bit equal steps, invalidation, the size limit, a whole run."""

import dataclasses

import pytest
import torch

from cot_transplant.train import fastpath, rundir
from cot_transplant.train.adapters import adapter_params
from cot_transplant.train.state_cache import StateCache, applies, row_keys
from cot_transplant.transplant import TransplantSpec
from test_fastpath import _batch, _session
from train_helpers import tiny_cfg


def _cached(session, max_bytes=2 ** 30):
    return dataclasses.replace(session.settings, state_cache=StateCache(max_bytes))


def _step(session, batch, settings):
    session.model.zero_grad(set_to_none=True)
    loss, p1, p2 = fastpath.train_forward_backward(session.model, batch, settings, 0.5)
    return loss, p1, p2, {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}


def test_the_cache_applies_only_where_the_arguer_states_cannot_change(tiny_rows):
    session = _session(tiny_rows, "variant=frozen-arguer", "lora.dropout=0.1")
    model = session.model
    assert not applies(model, "joint")  # training: the arguer takes gradients
    with torch.no_grad():
        assert not applies(model, "joint")  # no gradient, but dropout on a nonzero adapter in train mode
        model.eval()
        assert applies(model, "joint")  # evaluation: deterministic
    model.train()
    assert not applies(model, "frozen-arguer")  # frozen, but dropout on a nonzero adapter
    for n, p in adapter_params(model, "arguer"):
        if "lora_B" in n:
            p.data.zero_()
    assert applies(model, "frozen-arguer")  # B = 0: the adapter adds exactly zero whatever the dropout
    assert not applies(model, "text-only")


def test_frozen_arguer_cached_step_equals_the_uncached_one_bit_for_bit(tiny_rows):
    session = _session(tiny_rows, "variant=frozen-arguer")
    batch = _batch(session, 2)
    plain = dataclasses.replace(session.settings, state_cache=None)
    cached = _cached(session)
    expected = _step(session, batch, plain)
    first, second = _step(session, batch, cached), _step(session, batch, cached)
    stats = cached.state_cache.stats
    assert (stats.misses, stats.hits, stats.stored_rows) == (1, 1, 2)
    for got in (first, second):
        for a, b in zip(got[:3], expected[:3]):
            assert torch.equal(a, b)
        assert got[3].keys() == expected[3].keys() and all(".chooser." in n for n in got[3])
        assert all(torch.equal(got[3][n], expected[3][n]) for n in expected[3])


def test_eval_of_fixed_adapters_reuses_the_states_and_a_changed_adapter_or_spec_does_not(tiny_rows):
    session = _session(tiny_rows)  # joint: the cache serves evaluation only
    batch = _batch(session, 2)
    s = _cached(session)
    session.model.eval()
    with torch.no_grad():
        uncached = fastpath.forward(session.model, batch, dataclasses.replace(s, state_cache=None))
        runs = [fastpath.forward(session.model, batch, s) for _ in range(2)]
        assert (s.state_cache.stats.misses, s.state_cache.stats.hits) == (1, 1)
        for run in runs:
            assert all(torch.equal(a, b) for a, b in zip(run[:3], uncached[:3]))
        # An edit of the arguer's weights, even through .data (no version counter), is a new version.
        name, weight = next((n, p) for n, p in adapter_params(session.model, "arguer") if "lora_B" in n)
        weight.data[0, 0] += 0.5
        changed = fastpath.forward(session.model, batch, s)
        assert s.state_cache.stats.misses == 2
        assert not torch.equal(changed[1], uncached[1])
        weight.data[0, 0] -= 0.5
        other = dataclasses.replace(s, spec=TransplantSpec(layers=(0,)))
        s.state_cache.lookup(session.model, "arguer", batch, other.spec)
        assert s.state_cache.stats.misses == 3 and len(s.state_cache) == 0


def test_the_size_limit_stores_no_more_and_keys_ignore_padding(tiny_rows):
    session = _session(tiny_rows)
    batch = _batch(session, 2)
    s = _cached(session, max_bytes=1)
    session.model.eval()
    with torch.no_grad():
        fastpath.forward(session.model, batch, s)
        fastpath.forward(session.model, batch, s)
    assert len(s.state_cache) == 0 and s.state_cache.stats.full == 4 and s.state_cache.stats.hits == 0
    one = _batch(session, 3)
    keys = row_keys(one)
    assert len(set(keys)) == 3
    # The same rows in a batch with other padding have the same keys.
    assert row_keys(_batch(session, 2)) == keys[:2]


def test_a_frozen_arguer_run_is_the_same_with_and_without_the_cache(tiny_rows, tmp_path):
    from cot_transplant.train.loop import train

    runs = {}
    for name, gib in (("cached", 1), ("plain", 0)):
        train(tiny_cfg(f"run.dir={tmp_path}", f"run.name={name}", "variant=frozen-arguer", "train.epochs=2",
                       "train.max_samples=16", "eval.splits=[val]", f"train.arguer_cache_gib={gib}"))
        runs[name] = [x for x in rundir.read_metrics(tmp_path / name) if x.get("kind") in ("eval", "train")]
    assert len(runs["cached"]) == len(runs["plain"]) >= 4
    for a, b in zip(runs["cached"], runs["plain"]):
        for key in a:
            if key.endswith(("loss", "f_c")):
                assert a[key] == pytest.approx(b[key], rel=1e-6), key
