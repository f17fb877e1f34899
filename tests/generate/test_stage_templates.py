"""Prompt templates: the built-ins load, 'original' reproduces the original texts, bad files fail clearly."""

import re
from pathlib import Path

import pytest

from cot_transplant.errors import UserError
from cot_transplant.generate.stage_templates import load_templates

ORIGINAL_MD = Path("/work/shared/seed-data/original_prompts.md")


@pytest.mark.skipif(not ORIGINAL_MD.exists(), reason="shared seed data not present")
def test_original_renders_the_original_texts():
    blocks = dict(re.findall(r"## generation: (\w+)\n```\n(.*?)```", ORIGINAL_MD.read_text(), re.S))
    t = load_templates("original")
    q = 'A "quoted" question with {braces}?'
    assert t.render("correct", q).completion_text == blocks["QUESTION_PROMPT_ARGUMENT_FIRST"].format(q)
    assert t.render("incorrect", q).completion_text == blocks["QUESTION_PROMPT_ANSWER_FIRST"].format(q)
    c1, c2 = t.show_candidate("Two and two.", "4.0"), t.show_candidate("Five.", "5.0")
    assert c1 == '"Two and two. Final answer: 4.0"'
    rendered = t.render("choice", q, candidate_1=c1, candidate_2=c2).completion_text
    assert rendered == blocks["CHOOSE_ANSWER_PROMPT"].format(q, c1, c2)


def test_default_slots_and_prefix():
    t = load_templates()
    r = t.render("correct", "What is {candidate_1}?")  # slot-like text inside a value stays as written
    assert "What is {candidate_1}?" in r.prompt and r.prompt.endswith("### Response:\n")
    assert r.response == '{\n    "argument": "'
    assert t.render("incorrect", "Q").response == '{\n    "answer": "'
    assert t.sha != load_templates("original").sha and len(t.sha) == 16


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return str(p)


STAGES_OK = """
correct: {prompt: "Q {question}", response: "{"}
incorrect: {prompt: "Q {question}"}
choice: {prompt: "Q {question} {candidate_1} {candidate_2}"}
"""


def test_user_file_loads_and_hash_follows_text(tmp_path):
    t = load_templates(write(tmp_path, STAGES_OK))
    assert t.render("choice", "x", candidate_1='"a"', candidate_2='"b"').prompt == 'Q x "a" "b"'
    assert load_templates(write(tmp_path, STAGES_OK.replace("Q {question}", "R {question}"))).sha != t.sha


@pytest.mark.parametrize("text,message", [
    (STAGES_OK + "temprature: 1\n", "unknown key 'temprature'"),
    (STAGES_OK.replace("{candidate_2}", ""), "must hold the slot {candidate_2}"),
    (STAGES_OK.replace('"Q {question}", response', '"Q {answer}", response'), "slot {answer} is not allowed"),
    (STAGES_OK.replace("incorrect: {prompt", "incorrect: {promt"), "'incorrect' must be a mapping"),
    ("syntax: str.format\n" + STAGES_OK.replace('"{"', '"{x}"'), "not a valid str.format template"),
    ("- a list", "expected a mapping"),
    ("a: [", "not valid YAML"),
])
def test_bad_files(tmp_path, text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_templates(write(tmp_path, text))


def test_missing_file():
    with pytest.raises(UserError, match="no such file"):
        load_templates("/nonexistent/prompts.yaml")
