"""BOS: a tokenizer that adds one by default gets exactly one at the start of each prompt, spans moved with it;
one that adds none (the bundled SmolLM2) gets the same ids as before, the plain concatenation of its segments."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest

from cot_transplant.prompts.segments import Segment, adds_bos, encode_segments, tokenize_segment

TEXT = "Tom has 12 apples and gives 5 away, so 7 are left."


def bos_bpe_tokenizer():
    """A byte-level BPE whose plain call prepends "<s>" (a TemplateProcessing post-processor, LLaMA-style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT, "Question: how many apples? Answer: 7"] * 10, trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tok():
    return bos_bpe_tokenizer()


def test_the_tokenizer_adds_a_bos_on_its_own(tok):
    assert tok("x")["input_ids"][0] == tok.bos_token_id and adds_bos(tok)
    assert tokenize_segment(tok, Segment("x"))[0] != tok.bos_token_id  # segments never carry it


def test_one_bos_first_and_spans_moved_with_it(tok):
    head, body = tokenize_segment(tok, Segment("Question: ")), tokenize_segment(tok, Segment(TEXT))
    plain = encode_segments(tok, [Segment("Question: ", special=True), Segment(TEXT, "argument")], shift=False)
    assert plain.ids == [tok.bos_token_id] + head + body
    assert plain.spans["argument"] == (1 + len(head), 1 + len(head) + len(body))
    s, e = plain.spans["argument"]
    assert plain.ids[s:e] == body and tok.decode(plain.ids[s:e]) == TEXT
    shifted = encode_segments(tok, [Segment("Question: ", special=True), Segment(TEXT, "argument")])
    assert shifted.ids == plain.ids and shifted.spans["argument"] == (s - 1, e - 1)
    # A named segment first: the BOS precedes it, so even the shifted span has a token before it.
    first = encode_segments(tok, [Segment(TEXT, "argument")])
    assert first.ids == [tok.bos_token_id] + body and first.spans["argument"] == (0, len(body))


def test_no_second_bos_where_the_template_already_starts_with_one(tok):
    enc = encode_segments(tok, [Segment("<s>Question: ", special=True), Segment(TEXT, "argument")], shift=False)
    assert enc.ids.count(tok.bos_token_id) == 1 and enc.ids[0] == tok.bos_token_id
    assert tok.decode(enc.ids[slice(*enc.spans["argument"])]) == TEXT
    # Data text spelling "<s>" stays text, and an empty first segment does not take the BOS away.
    enc = encode_segments(tok, [Segment(""), Segment("<s> x", "argument")], shift=False)
    assert enc.ids.count(tok.bos_token_id) == 1 and enc.ids[0] == tok.bos_token_id and enc.spans["argument"][0] == 1


def test_bos_can_be_forced_either_way(tok):
    segments = [Segment("Question: "), Segment(TEXT, "argument")]
    assert encode_segments(tok, segments, bos=False).ids == tokenize_segment(tok, segments[0]) + \
        tokenize_segment(tok, segments[1])
    from transplant_helpers import bpe_tokenizer

    no_bos = bpe_tokenizer()  # no BOS token at all
    assert not adds_bos(no_bos)
    with pytest.raises(ValueError, match="no BOS token"):
        encode_segments(no_bos, segments, bos=True)


# --- the bundled SmolLM2: no BOS, ids unchanged ------------------------------------------------------

# The ids build_example gave for RECORD before BOS handling existed (sha256 of their JSON list, length).
PINNED = {("alpaca-json", 0): ("8fadef001206d66f", 161), ("alpaca-json", 1): ("6fd839121225efcf", 163),
          ("alpaca-json", "chooser"): ("19fbcbf15094b92a", 242), ("chat", 0): ("171d5cb01058d27e", 58),
          ("chat", 1): ("33fb67d5123de7b3", 60), ("chat", "chooser"): ("8134e1441a3173dd", 105)}


def _record():
    from cot_transplant.data.record import Record

    return Record("Tom has 12 apples and gives 5 away. How many are left?", "7", "12 - 5 = 7, so 7 are left.", "17",
                  "12 + 5 = 17, so 17 are left.", "candidate_1", "Candidate 1 subtracts.", False)


def _plain_concatenation(tok, text: str, values: dict[str, str]) -> list[int]:
    """The template tokenized piece by piece and concatenated, with no special-token handling of our own."""
    from cot_transplant.prompts.templates import split_slots

    ids = []
    for literal, slot in split_slots(text):
        piece = literal if slot is None else values[slot]
        ids += tok(piece, add_special_tokens=False, split_special_tokens=slot is not None)["input_ids"]
    return ids


@pytest.mark.parametrize("name", ["alpaca-json", "chat"])
def test_smollm2_encodings_are_unchanged(name):
    from cot_transplant.models import load_tokenizer
    from cot_transplant.prompts.templates import get_template
    from cot_transplant.train.batches import build_example

    tok = load_tokenizer("smollm2")
    assert not adds_bos(tok)  # its bos_token is <|im_start|>, which its plain call does not add
    template, rec = get_template(name, tok), _record()
    ex = build_example(rec, template, tok)
    (_, arg1), (_, arg2) = rec.candidates()
    expected = {0: _plain_concatenation(tok, template.arguer, {"question": rec.question, "argument": arg1}),
                1: _plain_concatenation(tok, template.arguer, {"question": rec.question, "argument": arg2}),
                "chooser": _plain_concatenation(tok, template.chooser, {
                    "question": rec.question, "candidate_1": arg1, "candidate_2": arg2,
                    "choice_argument": rec.choice_argument})}
    for key, enc in ((0, ex.arguer[0]), (1, ex.arguer[1]), ("chooser", ex.chooser)):
        assert enc.ids == expected[key], key
        digest = hashlib.sha256(json.dumps(enc.ids).encode()).hexdigest()[:16]
        assert (digest, len(enc.ids)) == PINNED[(name, key)], key
