"""Question sources: GSM8K, the Lila export layout, plain question/answer files."""

from __future__ import annotations

import json

import pytest

from cot_transplant.data.sources import Question, read_questions, split_gsm8k_answer
from cot_transplant.errors import UserError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_answers_lose_annotations_and_commas(tmp_path):
    path = _jsonl(tmp_path / "g.jsonl", [
        {"question": "Q1?", "answer": "It takes 2/2=<<2/2=1>>1 bolt\nSo 2+1=<<2+1=3>>3 bolts\n#### 3"},
        {"question": "Q2?", "answer": "He pays 1,000+200=<<1000+200=1200>>1,200\n#### 1,200"},
    ])
    assert read_questions(path) == [
        Question("g-0", "Q1?", "3", "gsm8k", "It takes 2/2=1 bolt\nSo 2+1=3 bolts"),
        Question("g-1", "Q2?", "1200", "gsm8k", "He pays 1,000+200=1,200"),
    ]
    assert split_gsm8k_answer("no final line") is None


def test_shared_gsm8k_test_file(gsm8k_test):
    questions = read_questions(gsm8k_test)
    assert len(questions) == 1319
    assert questions[0].answer == "18" and "<<" not in questions[0].solution and questions[0].source == "gsm8k"


def test_lila_layout_and_dataset_filter(tmp_path, lila_sample):
    assert len(read_questions(lila_sample)) == 60
    assert len(read_questions(lila_sample, datasets=["gsm8k"])) == 60
    path = _jsonl(tmp_path / "lila.jsonl", [
        {"input": "A?", "output_answer": "4", "dataset": "addsub.json"},
        {"input": "B?", "output_answer": "1,250", "dataset": "GSM8k_structured.json"},
        {"input": "C?", "output_answer": "7", "dataset": "svamp_structured.json"},
    ])
    chosen = read_questions(path, datasets=["GSM8k_structured.json", "svamp"])
    assert [(q.question, q.answer, q.source) for q in chosen] == [
        ("B?", "1250", "GSM8k_structured.json"), ("C?", "7", "svamp_structured.json")]
    with pytest.raises(UserError, match=r"no dataset 'svam' \(did you mean 'svamp'\?\)"):
        read_questions(path, datasets=["svam"])


def test_plain_question_answer_files(tmp_path, seed_csv):
    path = tmp_path / "plain.csv"
    path.write_text("question,answer,source\nWhat is 2+2?,4,mine\n\"Why, 3?\",3.5,\n")
    assert [(q.question, q.answer, q.source) for q in read_questions(path)] == [
        ("What is 2+2?", "4", "mine"), ("Why, 3?", "3.5", "plain")]
    seed = read_questions(seed_csv)  # a dataset file: Question + Correct Answer
    assert len(seed) == 2748 and seed[0].answer == "47.0"


@pytest.mark.parametrize("name,content,message", [
    ("x.jsonl", '{"prompt": "A?", "target": "4"}\n', "no question and answer columns"),
    ("x.jsonl", '{"question": "A?", "answer": "four"}\n', "x.jsonl:1: 'answer' has no number as the gold answer"),
    ("x.jsonl", '{"question": "", "answer": "4"}\n', "x.jsonl:1: 'question' is empty"),
    ("x.jsonl", '{"question": "A?", "answer": "4"}\n{oops\n', "x.jsonl:2: not valid JSON"),
    ("x.txt", "question,answer\n", "unknown question file format '.txt'"),
])
def test_bad_question_files_are_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_questions(path)


def test_bad_rows_can_be_skipped(tmp_path, capsys):
    path = _jsonl(tmp_path / "x.jsonl", [{"question": "A?", "answer": "4"}, {"question": "B?", "answer": "?"}])
    assert [q.question for q in read_questions(path, skip_invalid=True)] == ["A?"]
    assert "skipped 1 invalid row" in capsys.readouterr().err


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_questions(tmp_path / "none.jsonl")
