"""Property tests of the prompt/span builder with hostile text: spans stay exact, no special token smuggled."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cot_transplant.data.record import Record
from cot_transplant.prompts.segments import EmptySpan
from cot_transplant.prompts.templates import ALPACA_ARGUER, ALPACA_CHOOSER, Template
from cot_transplant.train.batches import build_example

pytestmark = pytest.mark.bundled

HOSTILE = ["[SEP]", "<|im_end|>", "<|im_start|>", "</s>", "<s>", "<|endoftext|>", "{question}", "{argument}",
           "{candidate_1}", '"', "'", "\\n", "\n", "\r\n", "```", "{", "}", "### Response:", "candidate_1"]
text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=12)), min_size=1, max_size=6).map("".join)


@pytest.fixture(scope="module")
def tok():
    from cot_transplant.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def templates(tok):
    from cot_transplant.prompts.templates import chat_template

    return [Template("alpaca-json", ALPACA_ARGUER, ALPACA_CHOOSER), chat_template(tok)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=text, right=text, wrong=text, argument=text, swapped=st.booleans(), which=st.integers(0, 1))
def test_spans_exact_and_no_special_tokens_from_data(tok, templates, question, right, wrong, argument, swapped, which):
    rec = Record(question, "1.0", right, "2.0", wrong, "candidate_1", argument, swapped)
    if not all(tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] for t in (right, wrong)):
        with pytest.raises(EmptySpan):  # e.g. only control characters: no tokens, so no span (runs skip the row)
            build_example(rec, templates[which], tok, shift=False)
        return
    ex = build_example(rec, templates[which], tok, shift=False)
    special = set(tok.all_special_ids)
    (_, arg1), (_, arg2) = rec.candidates()
    for enc, name, source in ((ex.arguer[0], "argument", arg1), (ex.arguer[1], "argument", arg2),
                              (ex.chooser, "candidate_1", arg1), (ex.chooser, "candidate_2", arg2)):
        start, end = enc.spans[name]
        ids = enc.ids[start:end]
        # The span is exactly the text, tokenized on its own, with no special token parsed from data.
        assert ids == tok(source, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert not special & set(ids)
    # The same text gives the same tokens (so the same span length) in both passes.
    a1, c1 = ex.arguer[0], ex.chooser
    assert a1.ids[slice(*a1.spans["argument"])] == c1.ids[slice(*c1.spans["candidate_1"])]
    # Special tokens appear only where the template puts them.
    n_template_special = sum(i in special for i in tok(templates[which].chooser.replace("{", "").replace("}", ""),
                                                          add_special_tokens=False)["input_ids"])
    assert sum(i in special for i in ex.chooser.ids) <= n_template_special


def test_a_row_whose_argument_has_no_tokens_is_skipped_and_counted(tok, templates):
    from cot_transplant.config import load_config
    from cot_transplant.train.setup import build_examples

    good = Record("Q?", "1.0", "2 + 2 = 4.", "2.0", "2 + 2 = 5.", "candidate_1", "Pick 1.", False, row_id=0)
    empty = Record("Q?", "1.0", "\x06", "2.0", "2 + 2 = 5.", "candidate_1", "Pick 1.", False, row_id=1)
    cfg = load_config(None, ["prompt.template=alpaca-json"])
    examples, skipped = build_examples([good, empty], [0, 1], cfg, templates[0], tok, None)
    assert [e.row_id for e in examples] == [0] and skipped == 1
