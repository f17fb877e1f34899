"""CLI: bad input is one line and exit 2; --choice-only; the pipeline's outcome rules on a stub backend."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import FAST, FakeOpenAI, gen, question, read_csv, summary, write_questions

from cot_transplant.data.io import write_records
from cot_transplant.data.record import Record
from cot_transplant.data.sources import Question
from cot_transplant.generate.backends import Sampling
from cot_transplant.generate.pipeline import Job, process
from cot_transplant.generate.stage_templates import load_templates


@pytest.mark.parametrize("args,message", [
    (["--questions", "{tmp}/missing.jsonl"], "missing.jsonl"),
    (["--backend", "opnai"], "did you mean 'openai'"),
    (["--model", ""], "needs a model name"),
    (["--out", "{tmp}/o.parquet"], "give a .csv path"),
    (["--concurrency", "0"], "--concurrency: must be >= 1"),
    (["--timeout", "0"], "--timeout: must be > 0"),
    (["--endpoint", "responses"], "--endpoint"),
    (["--prompts", "{tmp}/nope.yaml"], "no such file"),
    (["--questions", "synthetic:many"], "synthetic:N"),
    (["--datasets", "svamp"], "no 'dataset' column"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    q = write_questions(tmp_path / "q.jsonl", [question(0, 3)])
    base = {"--questions": str(q), "--out": str(tmp_path / "o.csv"), "--backend": "openai", "--model": "m",
            "--base-url": "http://127.0.0.1:9/v1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value.replace("{tmp}", str(tmp_path))
    argv = [x for kv in base.items() for x in kv]
    assert gen(*argv, *FAST) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_choice_only_on_a_pairs_file(tmp_path):
    pairs = [Record(question=f"Item {i}: how many? gold {i + 5} " + ("[choice:garbage]" if i == 2 else ""),
                    correct_answer=f"{i + 5}.0", correct_argument=f"Count {i + 5}.",
                    incorrect_answer=f"{i + 6}.0", incorrect_argument="Miscount.", extra={"id": f"p{i}", "note": "x"})
             for i in range(4)]
    path = tmp_path / "pairs.csv"
    write_records(pairs, path)
    out = tmp_path / "o.csv"
    with FakeOpenAI() as srv:
        assert gen("--questions", str(path), "--out", str(out), "--backend", "openai", "--model", "m2",
                   "--base-url", srv.url, "--choice-only", *FAST) == 0
    assert {e["stage"] for e in srv.log} == {"choice"}
    rows = read_csv(out)
    assert [r["id"] for r in rows] == ["p0", "p1", "p3"]
    assert all(r["note"] == "x" and r["gen_choice_model"] == "m2" and r["Choice Answer"] for r in rows)
    assert all((r["Choice Answer"] == "candidate_1") != (r["Choice Answers Swapped"] == "True") for r in rows)
    s = summary(out)
    assert (s["questions"], s["accepted"], s["bad_format_choice"], s["requests"]) == (4, 3, 1, 4)


class Stub:
    """A backend answering from a list, to test the outcome rules without a server."""

    name, model = "stub", "stub"

    def __init__(self, replies):
        self.replies = list(replies)

    def complete(self, request, counts: Counter) -> str:
        counts["requests"] += 1
        return self.replies.pop(0)


@pytest.mark.parametrize("gold,replies,outcome", [
    ("n/a", [], "bad_gold"),
    ("12", ['{"argument": "a", "answer": "12"}', '{"answer": "1/3", "argument": "b"}',
            '{"argument": "c", "answer_choice": "candidate_2"}'], "accepted"),
    ("12", ['{"argument": "a", "answer": "twelve"}'], "bad_format_correct"),
    ("12", ['{"argument": "a", "answer": "12.0000001"}', '{"answer": "12 apples", "argument": "b"}'],
     "incorrect_stage_right"),
    ("12", ['{"argument": "a", "answer": "12"}', '{"answer": "13", "argument": "b"}',
            '{"argument": "c", "answer_choice": "both"}'], "bad_format_choice"),
])
def test_outcome_rules(gold, replies, outcome):
    job = Job(Stub(replies), load_templates(), Sampling())
    got, record, counts = process(job, Question("x-0", "Q?", gold, "test"))
    assert got == outcome and counts[outcome] == 1 and counts["questions"] == 1
    assert counts["requests"] == len(replies)
    if outcome == "accepted":
        assert (record.correct_answer, record.incorrect_answer) == ("12.0", repr(1 / 3))
        assert record.extra["gen_backend"] == "stub" and record.has_choice
