"""Tolerant parsing of replies, against hand-written expectations."""

import pytest

from cot_transplant.generate.parse import format_number, parse_choice, parse_fields, parse_number, parse_reply


@pytest.mark.parametrize("text,value", [
    ("18", 18.0), ("$1,234.50", 1234.5), ("3/4 cup", 0.75), ("2 1/2 hours", 2.5), ("-5", -5.0),
    ("50%", 50.0), ("18 dollars", 18.0), ("x = 20/4 = 5", 5.0), ("The answer is 12.", 12.0),
    (".5", 0.5), ("10-5", 5.0), (7, 7.0), ("1,000,000 people", 1000000.0),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "eighteen", None, True, "1/0", float("nan")])
def test_parse_number_none(text):
    assert parse_number(text) is None


def test_parse_number_single():
    assert parse_number("18", single=True) == 18.0
    assert parse_number("3 and 4", single=True) is None
    assert parse_number("3 and 4") == 4.0


@pytest.mark.parametrize("value,choice", [
    ("candidate_1", "candidate_1"), ("Candidate 2", "candidate_2"), ("2", "candidate_2"), (1, "candidate_1"),
    ("candidate_1 or candidate_2", None), ("candidate_3", None), ("", None), (True, None), ("candidate_12", None),
])
def test_parse_choice(value, choice):
    assert parse_choice(value) == choice


def test_format_number():
    assert format_number(18) == "18.0" and format_number(0.75) == "0.75"


def test_whole_object_with_prose_and_raw_newlines():
    text = 'Sure! Here it is:\n```json\n{"argument": "Add 2\nand 3.", "answer": 5}\n```'
    assert parse_fields(text, ("argument", "answer")) == {"argument": "Add 2\nand 3.", "answer": "5"}


def test_continuation_of_the_opened_object():
    prefix = '{\n    "answer": "'
    reply = '$12",\n    "argument": "It is \\"twelve\\"."\n}'
    assert parse_reply(reply, prefix, ("answer", "argument")) == {"answer": "$12", "argument": 'It is "twelve".'}


def test_quoted_fields_without_closing_brace():
    prefix = '{\n    "argument": "'
    reply = 'Five apples.",\n    "answer": "5"'  # cut by a stop sequence or max tokens
    assert parse_reply(reply, prefix, ("argument", "answer")) == {"argument": "Five apples.", "answer": "5"}


def test_missing_or_empty_field_is_none():
    assert parse_fields('{"argument": "x"}', ("argument", "answer")) is None
    assert parse_fields('{"argument": "", "answer": "3"}', ("argument", "answer")) is None
    assert parse_reply("I am not sure.", '{"argument": "', ("argument", "answer")) is None
