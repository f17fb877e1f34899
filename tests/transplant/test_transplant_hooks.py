"""Capture/inject against golden values: identity, a hand-written forward, padding, row-major entries."""

from __future__ import annotations

import copy

import pytest
import torch
from transplant_helpers import VOCAB, bpe_tokenizer, ids, tiny, with_lora
from transplant_reference import llama_forward, transplant_subs

from cot_transplant.prompts.segments import Segment, encode_segments, pad_batch, position_ids, select_spans
from cot_transplant.transplant import TransplantSpec, capture, capture_kv, inject, inject_kv

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


def _segment_batches(tok, side):
    """Arguer prompts (one per text) and chooser prompts (two texts each), padded on `side`."""
    texts = ["Tom has 12 apples.", "The quick brown fox jumps over the lazy dog.", "so 7 are left", "Answer: 7"]
    arguer = [encode_segments(tok, [Segment("Question: "), Segment(t, "argument")]) for t in texts]
    chooser = [encode_segments(tok, [Segment("Q "), Segment(texts[2 * i], "candidate_1"), Segment(" and "),
                                     Segment(texts[2 * i + 1], "candidate_2"), Segment(" answer")])
               for i in range(2)]
    a_ids, a_mask, a_spans = pad_batch(arguer, tok.pad_token_id, side)
    c_ids, c_mask, c_spans = pad_batch(chooser, tok.pad_token_id, side)
    return (a_ids, a_mask, select_spans(a_spans, ["argument"])), \
        (c_ids, c_mask, select_spans(c_spans, ["candidate_1", "candidate_2"]))


def _masked_transplant(src, tgt, arguer, chooser):
    (a_ids, a_mask, a_spans), (c_ids, c_mask, c_spans) = arguer, chooser
    with capture_kv(src, a_spans, attention_mask=a_mask) as cap:
        src(a_ids, attention_mask=a_mask, position_ids=position_ids(a_mask))
    with inject_kv(tgt, c_spans, cap.kv, attention_mask=c_mask):
        return tgt(c_ids, attention_mask=c_mask, position_ids=position_ids(c_mask)).logits  # (B, T, V)


def _rows(batch, rows):
    ids_, mask, spans = batch
    return ids_[rows], mask[rows], [spans[r] for r in rows]


@pytest.mark.parametrize("side", ["left", "right"])
def test_row_alone_equals_row_in_padded_batch(side):
    tok = bpe_tokenizer()
    src, tgt = tiny(seed=1, vocab_size=len(tok)), tiny(seed=2, vocab_size=len(tok))
    arguer, chooser = _segment_batches(tok, side)
    batched = _masked_transplant(src, tgt, arguer, chooser)
    assert (arguer[1] == 0).any() and (chooser[1] == 0).any()
    for row in range(2):
        a_rows = _rows(arguer, [2 * row, 2 * row + 1])
        keep_a = a_rows[1].any(0)  # drop columns that are padding in both rows
        a_alone = (a_rows[0][:, keep_a], a_rows[1][:, keep_a],
                   [[(s - int((~keep_a[:s]).sum()), e - int((~keep_a[:s]).sum())) for s, e in r] for r in a_rows[2]])
        c_ids, c_mask, c_spans = _rows(chooser, [row])
        real = c_mask[0].bool()
        shift = int((~real[:c_spans[0][0][0]]).sum())
        c_alone = (c_ids[:, real], c_mask[:, real], [[(s - shift, e - shift) for s, e in c_spans[0]]])
        alone = _masked_transplant(src, tgt, a_alone, c_alone)
        torch.testing.assert_close(batched[row][real], alone[0], atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("family", ["qwen3", "olmo2", "gemma", "gemma2", "gemma3_text", "tiny-mistral", "tiny-qwen2"])
def test_other_families_identity_and_effect(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    if family.startswith("tiny-"):
        make = lambda seed: tiny(family, seed)  # noqa: E731
    else:
        cfg = AutoConfig.for_model(family, vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=256, pad_token_id=0)

        def make(seed):
            torch.manual_seed(seed)
            return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    src, tgt = make(1), make(2)
    x, y = ids(2, 12, seed=1), ids(2, 12, seed=2)
    same, _ = _transplant(tgt, tgt, y, y, SRC_SPANS, SRC_SPANS)
    torch.testing.assert_close(same, tgt(y).logits, atol=1e-6, rtol=0)
    moved, _ = _transplant(src, tgt, x, y, SRC_SPANS, SRC_SPANS)
    assert (moved - same).abs().max() > 1e-5
