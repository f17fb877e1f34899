"""Every documented error, and no hook left behind after one."""

from __future__ import annotations

import pytest
import torch
from transplant_helpers import ids, tiny, with_lora

from cot_transplant.transplant import TransplantSpec, capture, capture_kv, inject_kv
from cot_transplant.transplant.arch import resolve_sites


def _kv(model, spans=((1, 4),), batch=1, length=8):
    with capture_kv(model, [list(spans)] * batch) as cap:
        model(ids(batch, length))
    return cap.kv


def _hooks(model):
    return {name: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for name, m in model.named_modules()}


def test_length_mismatch_names_row_span_and_lengths():
    model = tiny()
    kv = _kv(model, [(1, 4)], batch=2)
    with pytest.raises(ValueError, match=r"row 1, span 0 \(2, 6\): 4 tokens, but states entry 1 has 3"):
        inject_kv(model, [[(0, 3)], [(2, 6)]], kv)


def test_different_number_of_entries():
    model = tiny()
    kv = _kv(model, [(1, 4)], batch=2)
    with pytest.raises(ValueError, match="hold 2 span entries but the target spans give 3"):
        inject_kv(model, [[(0, 3), (4, 7)], [(2, 5)]], kv)


@pytest.mark.parametrize("spans, message", [
    ([[(2, 9)]], r"row 0, span 0 \(2, 9\): outside the sequence of length 8"),
    ([[(-1, 2)]], r"row 0, span 0 \(-1, 2\): outside the sequence \(negative start\)"),
    ([[(3, 3)]], r"row 0, span 0 \(3, 3\): empty or reversed"),
    ([[(1, 2.5)]], r"row 0, span 0 .*not a \(start, end\) pair of ints"),
    ([[(1, 2)], [(1, 2)]], "spans give 2 rows but the batch has 1"),
])
def test_capture_rejects_bad_spans_and_removes_its_hooks(spans, message):
    model = tiny()
    model(ids(1, 8))  # transformers installs its own output-recording hooks on the first forward
    before = _hooks(model)
    with pytest.raises(ValueError, match=message):
        with capture_kv(model, spans):
            model(ids(1, 8))
    assert _hooks(model) == before


def test_inject_span_outside_sequence_raises_during_forward_and_cleans_up():
    model = with_lora(tiny())
    kv = _kv(model, [(4, 8)])
    model(ids(1, 8))
    before = _hooks(model)
    with pytest.raises(ValueError, match=r"row 0, span 0 \(5, 9\): outside the sequence of length 8"):
        with inject_kv(model, [[(5, 9)]], kv):
            model(ids(1, 8))
    assert _hooks(model) == before


def test_hooks_removed_when_the_forward_itself_raises():
    model = with_lora(tiny())
    kv = _kv(model)
    model(ids(1, 8))
    before = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_kv(model, [[(1, 4)]]), inject_kv(model, [[(1, 4)]], kv):
            model(ids(1, 8))
            assert _hooks(model) != before
            raise RuntimeError("boom")
    assert _hooks(model) == before


def test_spans_over_padding_rejected_when_mask_given():
    model = tiny()
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match=r"row 0, span 0 \(1, 4\): covers padding at position 1"):
        capture_kv(model, [[(1, 4)]], attention_mask=mask)
    kv = _kv(model)
    with pytest.raises(ValueError, match=r"row 0, span 0 \(1, 4\): covers padding at position 1"):
        inject_kv(model, [[(1, 4)]], kv, attention_mask=mask)


def test_overlapping_target_spans_rejected():
    model = tiny()
    kv = _kv(model, [(0, 3), (3, 6)])
    with pytest.raises(ValueError, match=r"row 0: spans \(1, 4\) and \(2, 5\) overlap"):
        inject_kv(model, [[(1, 4), (2, 5)]], kv)


def test_width_mismatch_between_models_is_an_error():
    src = tiny(num_key_value_heads=4)  # k/v width 32 against the target's 16 (grouped-query)
    kv = _kv(src)
    tgt = tiny()
    with pytest.raises(ValueError, match="layer 0 'k': states are 32 wide, the target's are 16"):
        with inject_kv(tgt, [[(1, 4)]], kv):
            tgt(ids(1, 8))


def test_inject_needs_every_site_in_the_states():
    model = tiny()
    kv = _kv(model)
    with capture(model, [[(1, 4)]], TransplantSpec("k", (1,))) as cap:
        model(ids(1, 8))
    with pytest.raises(ValueError, match=r"the states hold no \[\('v', 1\)\]"):
        inject_kv(model, [[(1, 4)]], cap.kv, spec=TransplantSpec("kv", (1,)))
    inject_kv(model, [[(1, 4)]], kv, spec=TransplantSpec("v", (0,)))  # a subset of the captured sites is fine


def test_states_before_any_forward_is_an_error():
    model = tiny()
    with capture_kv(model, [[(1, 4)]]) as cap:
        pass
    with pytest.raises(RuntimeError, match="no forward reached sites"):
        cap.kv


def test_unsupported_architecture_names_the_modules_it_looked_for():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"'gpt2' is not in the architecture table.*model\.layers\.<i>\."
                                         r"\{self_attn\.k_proj, self_attn\.v_proj\}"):
        capture_kv(model, [[(0, 1)]])


def test_layer_out_of_range():
    with pytest.raises(ValueError, match=r"layers \[5\] out of range; the model has 2 layers"):
        resolve_sites(tiny(), TransplantSpec("kv", (0, 5)))


def test_managers_are_single_use():
    model = tiny()
    manager = capture_kv(model, [[(1, 4)]])
    with manager:
        model(ids(1, 8))
    with pytest.raises(RuntimeError, match="single-use"):
        with manager:
            pass
