"""`transplant.mode: append`: the reference equals the fast path; with nothing read it is text-only, bit for bit;
the entries change the chooser's output when read."""

import dataclasses

import pytest
import torch

from cot_transplant.errors import UserError
from cot_transplant.runs.metrics import wilson
from cot_transplant.train import steps
from cot_transplant.train.loop import train
from cot_transplant.train.steps import append, reference
from step_helpers import _batch, _session, assert_fast_equals_reference
from train_helpers import tiny_cfg


@pytest.mark.parametrize("overrides", [("model.name=tiny-llama",), ("model.name=tiny-qwen2",),
                                       ("model.gradient_checkpointing=true",), ("train.fast_path_block=0",),
                                       ("variant=swapped-kv",), ("variant=shuffled-kv", "model.name=tiny-qwen2"),
                                       ("variant=frozen-arguer",), ("variant=shared",)])
def test_append_fast_path_equals_reference(tiny_rows, overrides):
    session = _session(tiny_rows, "transplant.mode=append", *overrides)
    assert steps.choose(session.model, session.settings).path == steps.FAST
    batch = _batch(session, 3)
    if "variant=swapped-kv" in overrides:  # the states' lengths are not the chooser's own candidates' there
        lengths = [e - s for row in batch.arguer_spans for s, e in row]
        assert lengths != [e - s for row in batch.chooser_spans for s, e in row]
    assert_fast_equals_reference(session, batch)


def test_append_with_sdpa_attention(tiny_rows):
    session = _session(tiny_rows, "transplant.mode=append")
    session.model.get_base_model().config._attn_implementation = "sdpa"
    assert_fast_equals_reference(session, _batch(session, 3))


def test_controls_keep_the_choosers_own_texts_in_append(tiny_rows):
    joint = _batch(_session(tiny_rows, "transplant.mode=append"), 3)
    swapped = _batch(_session(tiny_rows, "transplant.mode=append", "variant=swapped-kv"), 3)
    assert torch.equal(joint.chooser_ids, swapped.chooser_ids)
    assert not torch.equal(joint.arguer_ids, swapped.arguer_ids)


def test_append_with_every_entry_unread_is_text_only_bit_for_bit(tiny_rows, monkeypatch):
    session = _session(tiny_rows, "transplant.mode=append")
    batch = _batch(session, 3)
    text_only = dataclasses.replace(session.settings, variant="text-only")
    with torch.no_grad():
        plain = reference.forward(session.model, batch, text_only)
        monkeypatch.setattr(append, "sees_appended", lambda q, end: torch.zeros_like(q >= end))
        unread = reference.forward(session.model, batch, session.settings)
    assert unread[3] is not None  # the arguer ran and its states were appended, unread
    for a, b in zip(plain[:3], unread[:3]):
        assert torch.equal(a, b)


def test_appended_entries_change_the_chooser_and_only_after_their_span(tiny_rows):
    session = _session(tiny_rows, "transplant.mode=append")
    batch = _batch(session, 3)
    text_only = dataclasses.replace(session.settings, variant="text-only")
    with torch.no_grad():
        plain = reference.forward(session.model, batch, text_only)
        appended = reference.forward(session.model, batch, session.settings)
    assert (plain[1].log() - appended[1].log()).abs().min() > 1e-4
    ext = append.extend(batch)
    for b, ((s1, e1), (s2, e2)) in enumerate(ext.spans):
        first = e2  # the first real token's column
        real = ext.allowed[b, first:]
        span1, span2 = batch.chooser_spans[b]
        offset = int(batch.chooser_mask.shape[1] - batch.chooser_mask[b].sum())
        end1, end2 = span1[1] - offset, span2[1] - offset
        assert not real[:end1, s1:e1].any() and real[end1:, s1:e1].all()
        assert not real[:end2, s2:e2].any() and real[end2:, s2:e2].all()


def test_append_refuses_sites_other_than_whole_kv():
    for override in ("transplant.site=residual", "transplant.site=k", "transplant.layers=[0]"):
        with pytest.raises(UserError, match="transplant.mode"):
            tiny_cfg("transplant.mode=append", override)


def test_append_reads_the_planted_verdict_and_text_only_cannot(tmp_path, monkeypatch):
    """The positive control (tests/train/test_positive_control.py) in append mode: the chooser reads its own
    "hidden" text and, beside it, the arguer's states, which alone carry the verdict."""
    import cot_transplant.analysis.plots as plots
    from test_positive_control import PLANTED, _test_scores

    monkeypatch.setattr(plots, "plot_curves", lambda runs, out, **kw: out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for variant in ("joint", "text-only"):
            train(tiny_cfg(*PLANTED, f"variant={variant}", "transplant.mode=append", f"run.dir={tmp_path}",
                           f"run.name={variant}"))
    finally:
        torch.set_num_threads(threads)
    joint, text = _test_scores(tmp_path / "joint"), _test_scores(tmp_path / "text-only")
    print(f"append positive control: joint {sum(joint)}/{len(joint)}, text-only {sum(text)}/{len(text)}")
    assert len(joint) == len(text) == 24
    joint_ci, text_ci = wilson(sum(joint), len(joint)), wilson(sum(text), len(text))
    assert joint_ci[0] > text_ci[1], (sum(joint), sum(text))
    assert 0.25 <= sum(text) / len(text) <= 0.75
