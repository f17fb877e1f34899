"""The arguer state cache: where it applies, bit-for-bit equal steps, invalidation, the size limit, a whole run."""

import dataclasses
import json

import pytest
import torch

from cot_transplant.runs import rundir
from cot_transplant.train.adapters import adapter_params
from cot_transplant.train.steps import fast
from cot_transplant.train.steps.fast.state_cache import StateCache, applies, row_keys
from cot_transplant.transplant import TransplantSpec
from step_helpers import _batch, _session
from train_helpers import tiny_cfg


def _cached(session, max_bytes=2 ** 30):
    return StateCache(max_bytes)


def _step(session, batch, cache=None):
    session.model.zero_grad(set_to_none=True)
    loss, p1, p2 = fast.train_forward_backward(session.model, batch, session.settings, 0.5, cache)
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
    cached = _cached(session)
    expected = _step(session, batch)
    first, second = _step(session, batch, cached), _step(session, batch, cached)
    stats = cached.stats
    assert (stats.misses, stats.hits, stats.stored_rows) == (1, 1, 2)
    for got in (first, second):
        for a, b in zip(got[:3], expected[:3]):
            assert torch.equal(a, b)
        assert got[3].keys() == expected[3].keys() and all(".chooser." in n for n in got[3])
        assert all(torch.equal(got[3][n], expected[3][n]) for n in expected[3])


def test_eval_of_fixed_adapters_reuses_the_states_and_a_changed_adapter_or_spec_does_not(tiny_rows):
    session = _session(tiny_rows)  # joint: the cache serves evaluation only
    batch = _batch(session, 2)
    cache = _cached(session)
    session.model.eval()
    with torch.no_grad():
        uncached = fast.forward(session.model, batch, session.settings)
        runs = [fast.forward(session.model, batch, session.settings, cache) for _ in range(2)]
        assert (cache.stats.misses, cache.stats.hits) == (1, 1)
        for run in runs:
            assert all(torch.equal(a, b) for a, b in zip(run[:3], uncached[:3]))
        # An edit of the arguer's weights, even through .data (no version counter), is a new version.
        name, weight = next((n, p) for n, p in adapter_params(session.model, "arguer") if "lora_B" in n)
        weight.data[0, 0] += 0.5
        changed = fast.forward(session.model, batch, session.settings, cache)
        assert cache.stats.misses == 2
        assert not torch.equal(changed[1], uncached[1])
        weight.data[0, 0] -= 0.5
        other = dataclasses.replace(session.settings, spec=TransplantSpec(layers=(0,)))
        cache.lookup(session.model, "arguer", batch, other.spec)
        assert cache.stats.misses == 3 and len(cache) == 0


def test_the_size_limit_stores_no_more_and_keys_ignore_padding(tiny_rows):
    session = _session(tiny_rows)
    batch = _batch(session, 2)
    cache = _cached(session, max_bytes=1)
    session.model.eval()
    with torch.no_grad():
        fast.forward(session.model, batch, session.settings, cache)
        fast.forward(session.model, batch, session.settings, cache)
    assert len(cache) == 0 and cache.stats.full == 4 and cache.stats.hits == 0
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
    cache = json.loads((tmp_path / "cached" / "summary.json").read_text())["arguer_cache"]
    assert cache["hits"] > 0 and cache["stored_rows"] > 0  # the run's summary says what the cache served
    assert "arguer_cache" not in json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert len(runs["cached"]) == len(runs["plain"]) >= 4
    for a, b in zip(runs["cached"], runs["plain"]):
        for key in a:
            if key.endswith(("loss", "f_c")):
                assert a[key] == pytest.approx(b[key], rel=1e-6), key


def _cut(session, fraction, n=2):
    from cot_transplant.train.batches import collate

    ex = sorted(session.examples["train"], key=lambda e: e.n_tokens)
    return collate([ex[0], ex[-1]][:n], session.tokenizer.pad_token_id, fraction)


def test_cut_spans_are_served_as_prefixes_of_stored_whole_spans(tiny_rows):
    session = _session(tiny_rows)
    cache = _cached(session)
    session.model.eval()
    whole, half = _cut(session, 1.0), _cut(session, 0.5)
    assert row_keys(whole) == row_keys(half)  # the key leaves out where each candidate's span ends
    with torch.no_grad():
        fast.forward(session.model, whole, session.settings, cache)
        served = fast.forward(session.model, half, session.settings, cache)
        stats = cache.stats
        assert (stats.misses, stats.hits, stats.prefix_hits, stats.stored_rows) == (1, 1, 1, 2)
        recomputed = fast.forward(session.model, half, session.settings)
    assert served[3].kv.lengths == recomputed[3].kv.lengths
    for key, t in recomputed[3].kv.tensors.items():  # the first tokens of the whole spans, up to rounding
        torch.testing.assert_close(served[3].kv.tensors[key], t, rtol=1e-5, atol=1e-5)
    for a, b in zip(served[:3], recomputed[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert "1 of 2 batches served (50%; 1 as prefixes" in stats.line()


def test_a_row_stored_cut_is_replaced_by_its_longer_spans_and_never_served_short(tiny_rows):
    session = _session(tiny_rows)
    cache = _cached(session)
    session.model.eval()
    with torch.no_grad():
        fast.forward(session.model, _cut(session, 0.5), session.settings, cache)
        size = cache.stats.bytes
        # A miss: the stored spans are shorter.
        longer = fast.forward(session.model, _cut(session, 1.0), session.settings, cache)
        stats = cache.stats
        assert (stats.misses, stats.hits, stats.stored_rows, len(cache)) == (2, 0, 4, 2)
        assert stats.bytes > size and stats.bytes == sum(t.numel() * 4 for t in longer[3].kv.tensors.values())
        again = fast.forward(session.model, _cut(session, 1.0), session.settings, cache)
        assert (stats.hits, stats.prefix_hits) == (1, 0)  # the stored lengths: bit for bit
        assert all(torch.equal(a, b) for a, b in zip(again[:3], longer[:3]))
