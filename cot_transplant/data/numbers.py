"""Numbers as the data writes them: answer cells like "47.0", numbers in texts like "47" or "2.5"."""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal
from fractions import Fraction

# A number inside running text: "1,450,000", "2.5", "47"; a comma only groups thousands.
NUMBER_IN_TEXT = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")


def parse_number(text: str) -> float | None:
    """The finite number an answer cell holds ("47.0", "-3", "2.5"), or None when it is not one."""
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        return None
    return value if math.isfinite(value) else None


def terminates(x: Fraction) -> bool:
    """True when `x` has a finite decimal expansion (its denominator has no prime but 2 and 5)."""
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def decimal_text(x: Fraction | Decimal | int) -> str:
    """Exact decimal text of a terminating number: 47 -> "47", 5/2 -> "2.5", Decimal("10.0") -> "10".

    Raises:
        ValueError: a fraction without a finite decimal expansion.
    """
    if isinstance(x, Decimal):
        return decimal_str(x)
    x = Fraction(x)
    if not terminates(x):
        raise ValueError(f"{x} has no finite decimal expansion")
    if x.denominator == 1:
        return str(x.numerator)
    places = 0
    while (x * 10**places).denominator != 1:
        places += 1
    digits = str(abs(x.numerator * 10**places // x.denominator)).rjust(places + 1, "0")
    sign = "-" if x < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


@functools.lru_cache(maxsize=65536)
def decimal_str(x: Decimal) -> str:
    """`decimal_text` of a Decimal, cached: the synthetic generator writes the same numbers over and over."""
    return format(x.normalize(), "f") if x else "0"


def format_answer(value: Fraction | Decimal | int | float | str) -> str:
    """An answer cell as the original data writes it: a float's text, "47.0", "2.5".

    Strings may group thousands with commas ("1,450,000" -> "1450000.0").

    Raises:
        ValueError: not a finite number, or a fraction without a finite decimal expansion.
    """
    if isinstance(value, (Fraction, Decimal)):
        text = decimal_text(value)
        return text if "." in text else text + ".0"
    if isinstance(value, str):
        number = parse_number(value.replace(",", ""))
        if number is None:
            raise ValueError(f"not a number: {value!r}")
        value = number
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return repr(value)


def numbers_in(text: str) -> list[float]:
    """Every number written in `text`, in order ("1,200" counts as 1200)."""
    return [float(m.group().replace(",", "")) for m in NUMBER_IN_TEXT.finditer(text)]
