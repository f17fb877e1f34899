"""A BOS-adding tokenizer through build_example, collate and the fast path: one BOS starts each pass, spans
stay exact and of one length in both passes, and the fast path (whose shared prefix holds the BOS) still
equals the reference."""

from __future__ import annotations

import pytest

from cot_transplant.data.plant import shown_candidates
from cot_transplant.prompts.templates import get_template
from cot_transplant.train.batches import build_example, collate
from cot_transplant.train.steps.fast.plan import pack_arguer
from train_helpers import make_records


def smollm2_with_bos(bos: str = "<s>"):
    """The bundled tokenizer made LLaMA-style: its plain call prepends `bos` (a new token unless it exists)."""
    from tokenizers.processors import TemplateProcessing

    from cot_transplant.models import load_tokenizer

    tok = load_tokenizer("smollm2")
    if bos in tok.get_vocab():
        tok.bos_token = bos
    else:
        tok.add_special_tokens({"bos_token": bos})
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A",
                                                              special_tokens=[(bos, tok.bos_token_id)])
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    return tok


@pytest.fixture(scope="module")
def tok():
    return smollm2_with_bos()


@pytest.mark.parametrize("template_name", ["alpaca-json", "chat"])
@pytest.mark.parametrize("shift", [True, False])
def test_both_passes_start_with_one_bos_and_spans_stay_exact(tok, template_name, shift):
    template = get_template(template_name, tok)
    records = make_records(4)
    examples = [build_example(r, template, tok, shift=shift) for r in records]
    bos, k = tok.bos_token_id, 1 if shift else 0
    for rec, ex in zip(records, examples):
        shown = shown_candidates(rec)
        for enc in (*ex.arguer, ex.chooser):
            assert enc.ids[0] == bos and enc.ids.count(bos) == 1
        for j, (arguer, slot) in enumerate(zip(ex.arguer, ("candidate_1", "candidate_2"))):
            (a0, a1), (c0, c1) = arguer.spans["argument"], ex.chooser.spans[slot]
            assert a1 - a0 == c1 - c0
            # (with shift the span is the positions predicting the candidate's tokens, one earlier)
            assert tok.decode(arguer.ids[a0 + k:a1 + k]) == tok.decode(ex.chooser.ids[c0 + k:c1 + k]) == shown[j]
    batch = collate(examples, tok.pad_token_id)
    for ids, mask, spans, encs in ((batch.arguer_ids, batch.arguer_mask, batch.arguer_spans,
                                    [e for ex in examples for e in ex.arguer]),
                                   (batch.chooser_ids, batch.chooser_mask, batch.chooser_spans,
                                    [ex.chooser for ex in examples])):
        for r, enc in enumerate(encs):
            real = ids[r][mask[r].bool()].tolist()
            assert real == enc.ids and real[0] == bos  # left padding, then the one BOS
            for s, e in spans[r]:
                assert mask[r, s:e].all()
    # The fast path's shared prefix is [BOS, template, question]: computed once for both candidates.
    pack = pack_arguer(batch, tok.pad_token_id)
    for b in range(len(examples)):
        real = pack.ids[b][pack.mask[b].bool()].tolist()
        assert real[0] == bos and real.count(bos) == 1


def test_no_second_bos_where_the_chat_template_renders_it():
    tok = smollm2_with_bos("<|im_start|>")  # LLaMA-2/3-style: the chat markup itself starts with the BOS
    chat = build_example(make_records(1)[0], get_template("chat", tok), tok)
    alpaca = build_example(make_records(1)[0], get_template("alpaca-json", tok), tok)
    for enc in (*chat.arguer, chat.chooser):
        assert enc.ids[:2] != [tok.bos_token_id] * 2 and enc.ids[0] == tok.bos_token_id
    for enc in (*alpaca.arguer, alpaca.chooser):
        assert enc.ids[0] == tok.bos_token_id and enc.ids[1] != tok.bos_token_id


def test_fast_path_equals_reference_with_a_bos(tiny_rows, monkeypatch):
    import cot_transplant.models as models
    from step_helpers import _batch, _session, assert_fast_equals_reference

    with_bos = smollm2_with_bos()
    monkeypatch.setattr(models, "load_tokenizer", lambda name=None, trust_remote_code=False: with_bos)
    session = _session(tiny_rows)
    batch = _batch(session)
    assert (batch.arguer_ids == session.tokenizer.bos_token_id).sum() == batch.arguer_ids.shape[0]
    assert_fast_equals_reference(session, batch)
