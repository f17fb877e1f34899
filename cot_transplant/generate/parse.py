"""Tolerant reading of what an LLM wrote: JSON-ish fields, final numbers, candidate choices.

Models asked for a JSON object return it whole, continue a prefix we gave them, wrap
it in prose or code fences, put raw newlines inside strings, or stop before the closing
brace. `parse_fields` accepts all of these; anything it cannot read is a bad format
(counted by the pipeline), never an exception.
"""

from __future__ import annotations

import json
import math
import re

_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings are common

# A mixed number "2 1/2", a fraction "3/4", or a number with optional thousands separators.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<neg>-)?(?:"
    r"(?P<whole>\d+)\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)(?![\d.])"
    r"|(?P<num>\d+(?:\.\d+)?)\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d.])"
    r"|(?P<plain>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r")"
)
_CHOICE = re.compile(r"(?<!\d)([12])(?!\d)")


def _value(m: re.Match) -> float | None:
    if m["plain"] is not None:
        value = float(m["plain"].replace(",", ""))
    elif m["num"] is not None:
        den = float(m["den"])
        if den == 0:
            return None
        value = float(m["num"]) / den
    else:
        den = float(m["mden"])
        if den == 0:
            return None
        value = float(m["whole"]) + float(m["mnum"]) / den
    return -value if m["neg"] else value


def parse_number(text: object, *, single: bool = False) -> float | None:
    """The final number in `text` ("$1,234.50" -> 1234.5, "3/4 cup" -> 0.75, "2 1/2" -> 2.5).

    Currency signs, units, percent signs and surrounding words are ignored. With
    `single`, `text` must hold exactly one number (used for gold answers). Returns None
    when there is no number (or several, with `single`).
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    matches = list(_NUMBER.finditer(str(text)))
    if not matches or (single and len(matches) > 1):
        return None
    return _value(matches[-1])


def format_number(value: float) -> str:
    """Answers are stored as float text, as in the original data ("18" -> "18.0")."""
    return repr(float(value))


def same_number(a: float, b: float) -> bool:
    """Equality up to float noise (a fraction 1/3 against a gold 0.3333333)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def parse_choice(value: object) -> str | None:
    """'candidate_1' / 'candidate_2' from 'candidate_1', 'Candidate 2', '1', 2; None if unclear."""
    if isinstance(value, bool) or value is None:
        return None
    found = {m.group(1) for m in _CHOICE.finditer(str(value))}
    if len(found) != 1:
        return None
    return f"candidate_{found.pop()}"


def _json_objects(text: str):
    """Every JSON object that decodes starting at some '{' in `text`, in order."""
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _ = _DECODER.raw_decode(text, pos)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            yield obj
        pos = text.find("{", pos + 1)


def _quoted_field(text: str, name: str) -> str | None:
    """The value of `"name": "..."` (or an unquoted scalar) when the object as a whole does not decode."""
    m = re.search(r'"%s"\s*:\s*"((?:[^"\\]|\\.)*)"' % re.escape(name), text, re.DOTALL)
    if m:
        try:
            return _DECODER.decode('"' + m.group(1) + '"')
        except ValueError:
            return m.group(1)
    m = re.search(r'"%s"\s*:\s*([^",}\n][^,}\n]*)' % re.escape(name), text)
    if m and m.group(1).strip():
        return m.group(1).strip()
    return None


def parse_fields(text: str, fields: tuple[str, ...]) -> dict[str, str] | None:
    """Read `fields` from a reply: a JSON object holding them all, else `"field": "value"` pairs.

    Returns the fields as stripped strings, or None when any is missing or empty.
    """
    for obj in _json_objects(text):
        if all(f in obj and obj[f] is not None for f in fields):
            out = {f: obj[f] if isinstance(obj[f], str) else json.dumps(obj[f]) for f in fields}
            out = {f: v.strip() for f, v in out.items()}
            if all(out.values()):
                return out
    out = {}
    for f in fields:
        value = _quoted_field(text, f)
        if value is None or not value.strip():
            return None
        out[f] = value.strip()
    return out


def parse_reply(reply: str, prefix: str, fields: tuple[str, ...]) -> dict[str, str] | None:
    """`parse_fields` on the reply alone (a whole object), then on `prefix + reply` (a continuation)."""
    for text in (reply, prefix + reply) if prefix else (reply,):
        out = parse_fields(text, fields)
        if out is not None:
            return out
    return None
