"""The original masked variant: the choice argument's candidate identifiers replaced by `_`.

"Candidate 1 is right" -> "Candidate _ is right", "candidate_2" -> "candidate__",
"the first candidate" -> "the _ candidate", "#2" -> "#_", "the latter" -> "the _".
A masked argument may still give its choice away in another way, most often by quoting
one candidate's final number; `reveals_choice` flags those rows.
"""

from __future__ import annotations

import dataclasses
import re

from cot_transplant.data.numbers import numbers_in, parse_number
from cot_transplant.data.record import Record

_NOUN = r"(?:candidate|answer|option|solution|response|choice|argument|alternative|reply|proposal)s?"
_DIGIT = r"[12](?!\d|[.,]\d)"  # "answer 1" but not "answer 12" or "answer 1.5"
_SEP = r"(?:_|\s*\(?\s*(?:(?:number|no\.)\s*)?#?\s*)"
_MORE = rf"(?:\s*(?:,|and|or|vs\.?|versus|/|&)\s*(?:{_NOUN}{_SEP})?{_DIGIT})*"
_NUMBERED = re.compile(rf"\b({_NOUN})({_SEP}{_DIGIT}{_MORE})", re.IGNORECASE)
_WORD_NUMBERED = re.compile(rf"\b({_NOUN}\s+)(one|two)\b", re.IGNORECASE)
_HASH = re.compile(rf"(?<![\w#])(#\s?){_DIGIT}")
_ORDINAL = re.compile(rf"\b(?:first|second|1st|2nd)(?=(?:\s+[a-z]+)?\s+(?:{_NOUN}|one)\b)", re.IGNORECASE)
_FORMER = re.compile(r"\b(?:former|latter)\b", re.IGNORECASE)


def _mask_digits(m: re.Match) -> str:
    return m.group(1) + re.sub(r"[12]", "_", m.group(2))


def mask_choice_argument(text: str) -> str:
    """Replace every candidate identifier in a choice argument by `_`; the rest of the text is kept."""
    text = _NUMBERED.sub(_mask_digits, text)
    text = _WORD_NUMBERED.sub(lambda m: m.group(1) + "_", text)
    text = _HASH.sub(lambda m: m.group(1) + "_", text)
    text = _ORDINAL.sub("_", text)
    return _FORMER.sub("_", text)


def mask_record(record: Record) -> Record:
    """A copy of `record` with its choice argument masked."""
    if record.choice_argument is None:
        return record
    return dataclasses.replace(record, choice_argument=mask_choice_argument(record.choice_argument))


def _mentions(numbers: list[float], answer: str) -> bool:
    value = parse_number(answer)
    return value is not None and any(abs(n - value) <= 1e-9 * max(1.0, abs(value)) for n in numbers)


def reveals_choice(record_masked: Record) -> bool:
    """True when a masked choice argument still gives its choice away: an identifier survived masking,
    or it quotes the final number of exactly one of the two candidates."""
    text = record_masked.choice_argument or ""
    if mask_choice_argument(text) != text:
        return True
    numbers = numbers_in(text)
    return _mentions(numbers, record_masked.correct_answer) != _mentions(numbers, record_masked.incorrect_answer)
