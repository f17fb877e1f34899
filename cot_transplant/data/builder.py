"""The toolkit problem families are written with: people, number ranges, quantities and steps."""

from __future__ import annotations

import random
from decimal import Decimal

from cot_transplant.data.numbers import decimal_text
from cot_transplant.data.problems import APPLY, Problem, Step

NAMES = (("Janet", "she"), ("Tom", "he"), ("Aisha", "she"), ("Diego", "he"), ("Mei", "she"), ("Omar", "he"),
         ("Priya", "she"), ("Lukas", "he"), ("Sofia", "she"), ("Kwame", "he"), ("Hana", "she"), ("Mateo", "he"),
         ("Zara", "she"), ("Ivan", "he"), ("Leila", "she"), ("Noah", "he"), ("Amara", "she"), ("Ravi", "he"),
         ("Elena", "she"), ("Jamal", "he"), ("Yuki", "she"), ("Carlos", "he"), ("Fatima", "she"), ("Liam", "he"),
         ("Nadia", "she"), ("Kenji", "he"), ("Grace", "she"), ("Tariq", "he"), ("Ingrid", "she"), ("Samuel", "he"))
PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "his", "him")}
SYMBOLS = (("x", "/"), ("x", "/"), ("*", "/"), ("×", "÷"))  # "x" as in the original data, most often


class Draws(random.Random):
    """`random.Random` with `randint`, `choice`, `shuffle` and `sample` drawn from one `random()` each:
    several times faster than the rejection sampling of the originals, which is what the generator
    spends most of its draws on. Deterministic for a seed like its base."""

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]

    def shuffle(self, x: list) -> None:
        for i in range(len(x) - 1, 0, -1):
            j = int(self.random() * (i + 1))
            x[i], x[j] = x[j], x[i]

    def sample(self, population, k: int) -> list:
        pool = list(population)
        for i in range(k):
            j = i + int(self.random() * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


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
        self.values: dict[str, Decimal] = {}
        self.units: set[str] = set()
        self.rates: set[str] = set()
        self.steps: list[Step] = []
        self._results: list[Decimal] = []
        self._people: list[str] = []

    # --- drawing -------------------------------------------------------------------------------
    def person(self) -> Person:
        """A person not yet used in this problem."""
        name, gender = self.rng.choice(NAMES)
        while name in self._people:
            name, gender = self.rng.choice(NAMES)
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

    def price(self, hi: int = 20) -> Decimal:
        """Dollars: whole half of the time, else in quarters ($2.25), within the problem's range."""
        top = max(self.lo + 1, min(self.hi, hi))
        if self.rng.random() < 0.5:
            return Decimal(self.rng.randint(self.lo, top))
        return Decimal(self.rng.randint(4 * self.lo + 1, 4 * top - 1)) / 4

    def divisor(self, total: Decimal, lo: int = 2, hi: int = 12) -> int:
        """A whole number in [lo, hi] that divides `total` into a whole number, other than `total` itself."""
        if total != int(total):
            raise GiveUp
        options = [d for d in range(lo, hi + 1) if int(total) % d == 0 and d != total]
        if not options:
            raise GiveUp
        return self.rng.choice(options)

    # --- recording -----------------------------------------------------------------------------
    def q(self, name: str, value: int | Decimal, *, rate: bool = False) -> str:
        """A quantity the question states."""
        self.values[name] = Decimal(value)
        if rate:
            self.rates.add(name)
        return name

    def unit(self, name: str, value: int) -> str:
        """A conversion constant the solver is expected to know (60 minutes an hour)."""
        self.values[name] = Decimal(value)
        self.units.add(name)
        return name

    def t(self, name: str) -> str:
        """A quantity as written in the question: "7", "2.5"."""
        return decimal_text(self.values[name])

    def usd(self, name: str) -> str:
        """A money quantity as written in the question: "$3", "$2.50"."""
        v = self.values[name]
        return f"${v:.0f}" if v == int(v) else f"${v:.2f}"

    def step(self, args: tuple[str, ...] | list[str], op: str, frame: str, short: str = "{e}.") -> str:
        """Add a step applying `op` between all `args`; returns its reference "@j"."""
        args = tuple(args)
        self.steps.append(Step(args, (op,) * (len(args) - 1), frame, short))
        result = self.val(args[0])
        for a in args[1:]:
            result = APPLY[op](result, self.val(a))
        self._results.append(result)
        return f"@{len(self.steps)}"

    def val(self, ref: str) -> Decimal:
        """The value of a quantity name or a step reference."""
        return self._results[int(ref[1:]) - 1] if ref[0] == "@" else self.values[ref]

    @property
    def results(self) -> list[Decimal]:
        """Each step's result so far (what `evaluate` gives for the built problem)."""
        return list(self._results)

    def build(self, question: str) -> Problem:
        return Problem(self.family, question, dict(self.values), tuple(self.steps), frozenset(self.units),
                       frozenset(self.rates), self.rng.choice(SYMBOLS))


def products_plan(rng: random.Random, n_steps: int) -> tuple[int, bool]:
    """(products, final subtraction?) giving `n_steps` for "sum of products, then maybe subtract" problems:
    p products, one sum when p > 1, one subtraction when asked."""
    options = {2: [(1, True)], 3: [(2, False)], 4: [(2, True), (3, False)], 5: [(3, True), (4, False)]}
    return rng.choice(options[n_steps])
