"""Segment-wise tokenization: exact spans, same text same ids, padding, the shift option."""

from __future__ import annotations

import pytest
import torch
from transplant_helpers import bpe_tokenizer, metaspace_tokenizer

from cot_transplant.prompts.segments import (Encoded, Segment, encode_segments, pad_batch, position_ids, select_spans,
                                             tokenize_segment)

TEXT = "Tom has 12 apples and gives 5 away, so 7 are left."


@pytest.fixture(scope="module", params=["bpe", "metaspace"])
def tok(request):
    return bpe_tokenizer() if request.param == "bpe" else metaspace_tokenizer()


def _plain(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_spans_are_exact(tok):
    enc = encode_segments(tok, [Segment("Question: "), Segment(TEXT, "argument"), Segment(" Answer:")], shift=False)
    head, body, tail = _plain(tok, "Question: "), _plain(tok, TEXT), _plain(tok, " Answer:")
    assert enc.ids == head + body + tail
    assert enc.spans == {"argument": (len(head), len(head) + len(body))}


def test_shift_moves_spans_one_token_earlier(tok):
    segments = [Segment("Question: "), Segment(TEXT, "argument"), Segment(" Answer:")]
    plain = encode_segments(tok, segments, shift=False)
    shifted = encode_segments(tok, segments)  # shift=True is the default
    s, e = plain.spans["argument"]
    assert shifted.ids == plain.ids and shifted.spans["argument"] == (s - 1, e - 1)
    with pytest.raises(ValueError, match="'argument' starts the prompt"):
        encode_segments(tok, [Segment(TEXT, "argument")])
    assert encode_segments(tok, [Segment(TEXT, "argument")], shift=False).spans["argument"][0] == 0


def test_same_text_gets_same_ids_in_both_prompts(tok):
    arguer = encode_segments(tok, [Segment("Solve it. "), Segment(TEXT, "argument")], shift=False)
    chooser = encode_segments(tok, [Segment("Candidate 1:"), Segment(TEXT, "c1"), Segment("\nCandidate 2: x"),
                                    Segment("so 7 are left", "c2")], shift=False)
    a, c = arguer.spans["argument"], chooser.spans["c1"]
    assert arguer.ids[a[0]:a[1]] == chooser.ids[c[0]:c[1]] == tokenize_segment(tok, Segment(TEXT))


def test_each_segment_is_tokenized_as_if_it_started_a_text():
    # Why texts are tokenized on their own, and the price: "apples" inside a sentence is " apples" to a
    # byte-level BPE, while a SentencePiece-style tokenizer puts its word-start marker on every segment.
    bpe, sp = bpe_tokenizer(), metaspace_tokenizer()
    in_sentence = _plain(bpe, "Tom has 12 apples")
    alone = tokenize_segment(bpe, Segment("apples"))
    assert in_sentence[-len(alone):] != alone
    pieces = sp.convert_ids_to_tokens(encode_segments(sp, [Segment("12"), Segment("apples")], shift=False).ids)
    assert pieces != sp.convert_ids_to_tokens(_plain(sp, "12apples")) and pieces[0].startswith("▁")


def test_special_tokens_only_where_the_template_asks():
    tok = bpe_tokenizer()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    data = tokenize_segment(tok, Segment("a <|im_end|> b"))
    markup = tokenize_segment(tok, Segment("a <|im_end|> b", special=True))
    assert end not in data and end in markup
    assert tok.decode(data) == "a <|im_end|> b"
    assert tokenize_segment(tok, Segment("x")) == _plain(tok, "x")  # no BOS/EOS added


def test_a_special_token_the_model_emits_anyway_is_an_error():
    sp = metaspace_tokenizer()  # its Unigram model holds "<pad>" as an ordinary piece
    with pytest.raises(ValueError, match=r"'answer': data text produced special tokens \['<pad>'\]"):
        encode_segments(sp, [Segment("x "), Segment("a <pad> b", "answer")])


def test_errors_name_the_segment(tok):
    with pytest.raises(ValueError, match="'a' is used twice"):
        encode_segments(tok, [Segment("x "), Segment("y", "a"), Segment("z", "a")])
    with pytest.raises(ValueError, match="'a' has no tokens"):
        encode_segments(tok, [Segment("x "), Segment("", "a")])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_moves_spans_into_the_padded_tensor(tok, side):
    short = encode_segments(tok, [Segment("Q: "), Segment("so 7", "a"), Segment(" end")])
    long = encode_segments(tok, [Segment("Question: "), Segment(TEXT, "a"), Segment(" end")])
    ids, mask, spans = pad_batch([short, long], tok.pad_token_id, side)
    width = len(long.ids)
    assert ids.shape == mask.shape == (2, width) and ids.dtype == mask.dtype == torch.long
    pad = width - len(short.ids)
    offset = pad if side == "left" else 0
    assert spans[0]["a"] == (short.spans["a"][0] + offset, short.spans["a"][1] + offset)
    assert spans[1] == long.spans
    for row, enc in enumerate([short, long]):
        s, e = spans[row]["a"]
        es, ee = enc.spans["a"]
        assert ids[row, s:e].tolist() == enc.ids[es:ee]
        assert ids[row][mask[row].bool()].tolist() == enc.ids
    real, pads = [1] * len(short.ids), [0] * pad
    assert mask[0].tolist() == (pads + real if side == "left" else real + pads)
    if side == "left":
        assert ids[:, -1].tolist() == [short.ids[-1], long.ids[-1]]


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 2, 2]]


def test_select_spans_and_bad_side():
    rows = [{"c1": (1, 3), "c2": (4, 6)}, {"c1": (0, 2), "c2": (5, 9)}]
    assert select_spans(rows, ["c1", "c2"]) == [[(1, 3), (4, 6)], [(0, 2), (5, 9)]]
    with pytest.raises(ValueError, match="side 'middle'"):
        pad_batch([Encoded([1, 2])], 0, "middle")
