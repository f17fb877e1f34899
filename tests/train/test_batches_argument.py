"""`data.argument: none`: every variant's chooser prompt reads as the `no-argument` variant's."""

from __future__ import annotations

import pytest

from cot_transplant.config import load_config
from cot_transplant.data.io import write_records
from cot_transplant.models import load_tokenizer
from cot_transplant.prompts.templates import get_template
from cot_transplant.runs.records import load_records
from cot_transplant.train.batches import build_example
from train_helpers import make_records


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2")


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_records(make_records(6), path)
    return path


@pytest.mark.parametrize("template_name", ["alpaca-json", "chat"])
def test_argument_none_gives_every_variant_the_no_argument_chooser(rows_file, tok, template_name):
    template = get_template(template_name, tok, None)
    plain = load_records(load_config(None, [f"data.path={rows_file}"]))
    none = load_records(load_config(None, [f"data.path={rows_file}", "data.argument=none"]))
    assert all(r.choice_argument == "" for r in none) and all(r.choice_argument for r in plain)
    assert [r.choice_answer for r in none] == [r.choice_answer for r in plain]  # the argument's pick is still known
    for p, n in zip(plain, none):
        reference = build_example(p, template, tok, variant="no-argument")
        for variant in ("joint", "frozen-arguer", "text-only", "no-argument"):
            ex = build_example(n, template, tok, variant=variant)
            assert ex.chooser.ids == reference.chooser.ids
            assert ex.chooser.spans == reference.chooser.spans
            assert [a.ids for a in ex.arguer] == [a.ids for a in reference.arguer]
        assert build_example(p, template, tok).chooser.ids != reference.chooser.ids  # the argument was there


def test_the_empty_argument_leaves_a_well_formed_prompt(rows_file, tok):
    none = load_records(load_config(None, [f"data.path={rows_file}", "data.argument=none"]))
    alpaca = build_example(none[0], get_template("alpaca-json", tok, None), tok)
    assert '"argument": "",\n    "answer_choice": "candidate_' in tok.decode(alpaca.chooser.ids)
    chat = build_example(none[0], get_template("chat", tok, None), tok)
    assert tok.decode(chat.chooser.ids).endswith(" So the correct one is candidate_")
