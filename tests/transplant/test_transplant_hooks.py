"""Capture/inject against golden values: identity, a hand-written forward, padding, row-major entries."""

from __future__ import annotations

import copy

import pytest
import torch
from transplant_helpers import VOCAB, bpe_tokenizer, ids, tiny, with_lora
from transplant_reference import llama_forward, transplant_subs

from cot_transplant.prompts.segments import Segment, encode_segments, pad_batch, position_ids, select_spans
from cot_transplant.transplant import SpanStates, TransplantSpec, capture, capture_kv, inject, inject_kv

SRC_SPANS = [[(1, 5)], [(3, 9)]]
TGT_SPANS = [[(2, 6)], [(4, 10)]]


def _transplant(src, tgt, src_ids, tgt_ids, src_spans, tgt_spans, spec=TransplantSpec()):
    with capture(src, src_spans, spec) as cap:
        src(src_ids)
    with inject(tgt, tgt_spans, cap.kv):
        return tgt(tgt_ids).logits, cap.kv


def test_identity_capture_then_inject_into_the_same_run():
    model = tiny()
    x = ids(2, 12)
    logits, kv = _transplant(model, model, x, x, SRC_SPANS, SRC_SPANS)
    torch.testing.assert_close(logits, model(x).logits, atol=1e-6, rtol=0)
    assert len(kv) == 2 and [t.shape for t in kv[1].values()] == [(6, 16)] * 4
    assert [e[("k", 1)].shape[0] for e in kv] == [4, 6] and kv[-1][("v", 0)].shape == (6, 16)
    # The same entries routed to the other row change the result: the identity is not a no-op hook.
    swapped, _ = _transplant(model, model, x, x, SRC_SPANS, [[(3, 7)], [(1, 7)]])
    assert (swapped - logits).abs().max() > 1e-3


@pytest.mark.parametrize("spec", [TransplantSpec(), TransplantSpec("k"), TransplantSpec("v"),
                                  TransplantSpec("kv", (1,)), TransplantSpec("residual", (0,)),
                                  TransplantSpec("residual", (0, 1))], ids=lambda s: f"{s.site}-{s.layers}")
def test_transplant_matches_hand_written_forward(spec):
    src, tgt = tiny(seed=1), tiny(seed=2)
    src_ids, tgt_ids = ids(2, 10, seed=1), ids(2, 12, seed=2)
    logits, kv = _transplant(src, tgt, src_ids, tgt_ids, SRC_SPANS, TGT_SPANS, spec)
    _, src_states = llama_forward(src, src_ids)
    layers = spec.layers if spec.layers is not None else range(2)
    keys = [(key, i) for i in layers for key in spec.keys]
    expected, _ = llama_forward(tgt, tgt_ids, transplant_subs(src_states, SRC_SPANS, TGT_SPANS, keys))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert sorted(kv.tensors) == sorted(keys)
    plain, _ = llama_forward(tgt, tgt_ids)
    assert (plain - expected).abs().max() > 1e-4


def test_two_spans_per_target_row_take_entries_row_major():
    src, tgt = tiny(seed=1), tiny(seed=2)
    src_ids, tgt_ids = ids(4, 9, seed=3), ids(2, 16, seed=4)
    src_spans = [[(1, 4)], [(2, 7)], [(0, 2)], [(3, 9)]]  # 2B rows, one span each
    tgt_spans = [[(1, 4), (6, 11)], [(2, 4), (8, 14)]]  # B rows, two spans each, lengths 3,5 | 2,6
    logits, _ = _transplant(src, tgt, src_ids, tgt_ids, src_spans, tgt_spans)
    _, src_states = llama_forward(src, src_ids)
    keys = [(key, i) for i in range(2) for key in ("k", "v")]
    expected, _ = llama_forward(tgt, tgt_ids, transplant_subs(src_states, src_spans, tgt_spans, keys))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def _prompts(tok):
    """Four arguer prompts (one text each) and two chooser prompts (two of those texts each)."""
    texts = ["Tom has 12 apples and gives 5 away.", "The quick brown fox jumps over the lazy dog.",
             "so 7 are left", "7"]
    arguer = [encode_segments(tok, [Segment("Question: "), Segment(t, "argument")]) for t in texts]
    chooser = [encode_segments(tok, [Segment("Q "), Segment(texts[2 * i], "candidate_1"), Segment(" and "),
                                     Segment(texts[2 * i + 1], "candidate_2"), Segment(" answer")])
               for i in range(2)]
    return arguer, chooser


def _capture(model, prompts, pad_id, side):
    ids_, mask, spans = pad_batch(prompts, pad_id, side)
    with capture_kv(model, select_spans(spans, ["argument"]), attention_mask=mask) as cap:
        model(ids_, attention_mask=mask, position_ids=position_ids(mask))
    return cap.kv


def _inject(model, prompts, states, pad_id, side):
    ids_, mask, spans = pad_batch(prompts, pad_id, side)
    with inject_kv(model, select_spans(spans, ["candidate_1", "candidate_2"]), states, attention_mask=mask):
        logits = model(ids_, attention_mask=mask, position_ids=position_ids(mask)).logits  # (B, T, V)
    return [row[m.bool()] for row, m in zip(logits, mask)]  # real positions only


def _join(entries: list[SpanStates]) -> SpanStates:
    """Single-entry states back to back, as one capture of those rows would give."""
    return SpanStates(entries[0].spec, tuple(n for e in entries for n in e.lengths),
                      {k: torch.cat([e.tensors[k] for e in entries]) for k in entries[0].tensors})


@pytest.mark.parametrize("side", ["left", "right"])
def test_row_alone_equals_row_in_padded_batch(side):
    tok = bpe_tokenizer()
    src, tgt = tiny(seed=1, vocab_size=len(tok)), tiny(seed=2, vocab_size=len(tok))
    arguer, chooser = _prompts(tok)
    assert len({len(p.ids) for p in arguer}) == 4 and len({len(p.ids) for p in chooser}) == 2  # real padding
    batched_kv = _capture(src, arguer, tok.pad_token_id, side)
    alone_kv = [_capture(src, [p], tok.pad_token_id, side) for p in arguer]
    for j, alone in enumerate(alone_kv):
        for key, t in alone[0].items():
            torch.testing.assert_close(batched_kv[j][key], t, atol=1e-5, rtol=1e-5)
    batched = _inject(tgt, chooser, batched_kv, tok.pad_token_id, side)
    for i, prompt in enumerate(chooser):
        alone = _inject(tgt, [prompt], _join(alone_kv[2 * i:2 * i + 2]), tok.pad_token_id, side)
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)


def test_peft_hooks_see_the_lora_delta():
    base = tiny(seed=1)
    merged = copy.deepcopy(base)
    model = with_lora(base, "arguer", seed=3)
    x = ids(2, 10)
    with capture_kv(model, SRC_SPANS) as cap:
        model(x)
    merged_model = copy.deepcopy(model).merge_and_unload()
    with capture_kv(merged_model, SRC_SPANS) as ref:
        merged_model(x)
    with capture_kv(merged, SRC_SPANS) as no_lora:
        merged(x)
    for key, t in cap.kv.tensors.items():
        torch.testing.assert_close(t, ref.kv.tensors[key], atol=1e-5, rtol=1e-5)
        assert (t - no_lora.kv.tensors[key]).abs().max() > 1e-4


def test_two_named_adapters_on_one_base_transplant_like_two_models():
    from transplant_helpers import two_adapters

    from cot_transplant.transplant import active_adapter

    model = two_adapters()
    src_ids, tgt_ids = ids(2, 10, seed=1), ids(2, 12, seed=2)
    with active_adapter(model, "arguer"), capture_kv(model, SRC_SPANS) as cap:
        model(src_ids)
    with active_adapter(model, "chooser"), inject_kv(model, TGT_SPANS, cap.kv):
        logits = model(tgt_ids).logits
    arguer = copy.deepcopy(model)
    arguer.set_adapter("arguer")
    chooser = copy.deepcopy(model)
    chooser.set_adapter("chooser")
    separate, _ = _transplant(arguer.merge_and_unload(), chooser.merge_and_unload(), src_ids, tgt_ids,
                              SRC_SPANS, TGT_SPANS)
    torch.testing.assert_close(logits, separate, atol=1e-5, rtol=1e-5)


def _family_model(family: str, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    if family.startswith("tiny-"):
        return tiny(family, seed)
    cfg = AutoConfig.for_model(family, vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                               max_position_embeddings=256, pad_token_id=0)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


@pytest.mark.parametrize("family", ["qwen3", "olmo2", "gemma", "gemma2", "gemma3_text", "tiny-mistral", "tiny-qwen2"])
def test_other_families_identity_and_effect(family):
    src, tgt = _family_model(family, 1), _family_model(family, 2)
    x, y = ids(2, 12, seed=1), ids(2, 12, seed=2)
    same, _ = _transplant(tgt, tgt, y, y, SRC_SPANS, SRC_SPANS)
    torch.testing.assert_close(same, tgt(y).logits, atol=1e-6, rtol=0)
    moved, _ = _transplant(src, tgt, x, y, SRC_SPANS, SRC_SPANS)
    assert (moved - same).abs().max() > 1e-5
