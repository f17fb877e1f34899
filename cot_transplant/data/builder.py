"""The toolkit problem families are written with: people, number ranges, quantities and steps."""

from __future__ import annotations

import random
from fractions import Fraction

from cot_transplant.data.numbers import decimal_text
from cot_transplant.data.problems import APPLY, Problem, Step

NAMES = (("Janet", "she"), ("Tom", "he"), ("Aisha", "she"), ("Diego", "he"), ("Mei", "she"), ("Omar", "he"),
         ("Priya", "she"), ("Lukas", "he"), ("Sofia", "she"), ("Kwame", "he"), ("Hana", "she"), ("Mateo", "he"),
         ("Zara", "she"), ("Ivan", "he"), ("Leila", "she"), ("Noah", "he"), ("Amara", "she"), ("Ravi", "he"),
         ("Elena", "she"), ("Jamal", "he"), ("Yuki", "she"), ("Carlos", "he"), ("Fatima", "she"), ("Liam", "he"),
         ("Nadia", "she"), ("Kenji", "he"), ("Grace", "she"), ("Tariq", "he"), ("Ingrid", "she"), ("Samuel", "he"))
PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "his", "him")}
SYMBOLS = (("x", "/"), ("x", "/"), ("*", "/"), ("×", "÷"))  # "x" as in the original data, most often


class Person:
    def __init__(self, name: str, gender: str) -> None:
        self.name = name
        self.he, self.his, self.him = PRONOUNS[gender]
        self.He, self.His = self.he.capitalize(), self.his.capitalize()


class GiveUp(Exception):
    """The random draw cannot make a sensible problem (a negative count, no exact division): draw again."""


def join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class Builder:
    """Collects a problem's quantities and steps while a family writes its question.

    Quantities are referred to by name; a step returns "@j", usable as an operand later.
    """

    def __init__(self, family: str, rng: random.Random, number_range: tuple[int, int], short: bool) -> None:
        self.family, self.rng, self.short = family, rng, short
        self.lo, self.hi = number_range
        self.small_hi = min(self.hi, max(self.lo + 3, 12))  # counts of rides, friends, days: keep them small
        self.values: dict[str, Fraction] = {}
        self.units: set[str] = set()
        self.rates: set[str] = set()
        self.steps: list[Step] = []
        self._results: list[Fraction] = []
        self._people: list[str] = []

    # --- drawing -------------------------------------------------------------------------------
    def person(self) -> Person:
        """A person not yet used in this problem."""
        name, gender = self.rng.choice([p for p in NAMES if p[0] not in self._people])
        self._people.append(name)
        return Person(name, gender)

    def pick(self, *options):
        return self.rng.choice(options)

    def count(self, lo: int | None = None, hi: int | None = None) -> int:
        """A whole number in the problem's range (or in [lo, hi])."""
        lo, hi = self.lo if lo is None else lo, self.hi if hi is None else hi
        if hi < lo:
            raise GiveUp
        return self.rng.randint(lo, hi)

    def small(self) -> int:
        return self.rng.randint(self.lo, self.small_hi)

    def price(self, hi: int = 20) -> Fraction:
        """Dollars: whole half of the time, else in quarters ($2.25), within the problem's range."""
        top = max(self.lo + 1, min(self.hi, hi))
        if self.rng.random() < 0.5:
            return Fraction(self.rng.randint(self.lo, top))
        return Fraction(self.rng.randint(4 * self.lo + 1, 4 * top - 1), 4)

    def divisor(self, total: Fraction, lo: int = 2, hi: int = 12) -> int:
        """A whole number in [lo, hi] that divides `total` into a whole number, other than `total` itself."""
        if total.denominator != 1:
            raise GiveUp
        options = [d for d in range(lo, hi + 1) if total.numerator % d == 0 and d != total]
        if not options:
            raise GiveUp
        return self.rng.choice(options)

    # --- recording -----------------------------------------------------------------------------
    def q(self, name: str, value: int | Fraction, *, rate: bool = False) -> str:
        """A quantity the question states."""
        self.values[name] = Fraction(value)
        if rate:
            self.rates.add(name)
        return name

    def unit(self, name: str, value: int) -> str:
        """A conversion constant the solver is expected to know (60 minutes an hour)."""
        self.values[name] = Fraction(value)
        self.units.add(name)
        return name

    def t(self, name: str) -> str:
        """A quantity as written in the question: "7", "2.5"."""
        return decimal_text(self.values[name])

    def usd(self, name: str) -> str:
        """A money quantity as written in the question: "$3", "$2.50"."""
        v = self.values[name]
        return f"${v.numerator}" if v.denominator == 1 else f"${float(v):.2f}"

    def step(self, args: tuple[str, ...] | list[str], op: str, frame: str, short: str = "{e}.") -> str:
        """Add a step applying `op` between all `args`; returns its reference "@j"."""
        args = tuple(args)
        self.steps.append(Step(args, (op,) * (len(args) - 1), frame, short))
        result = self.val(args[0])
        for a in args[1:]:
            result = APPLY[op](result, self.val(a))
        self._results.append(result)
        return f"@{len(self.steps)}"

    def val(self, ref: str) -> Fraction:
        """The value of a quantity name or a step reference."""
        return self._results[int(ref[1:]) - 1] if ref.startswith("@") else self.values[ref]

    def build(self, question: str) -> Problem:
        return Problem(self.family, question, dict(self.values), tuple(self.steps), frozenset(self.units),
                       frozenset(self.rates), self.rng.choice(SYMBOLS))


def products_plan(rng: random.Random, n_steps: int) -> tuple[int, bool]:
    """(products, final subtraction?) giving `n_steps` for "sum of products, then maybe subtract" problems:
    p products, one sum when p > 1, one subtraction when asked."""
    options = {2: [(1, True)], 3: [(2, False)], 4: [(2, True), (3, False)], 5: [(3, True), (4, False)]}
    return rng.choice(options[n_steps])
