"""Structured arithmetic word problems and their controlled corruption.

A `Problem` is a question plus the exact steps that solve it: each step combines given
quantities, known unit constants (60 minutes an hour) and earlier results ("@1") with
+ - * /, left to right. Values are `Fraction`s, so answers are exact. A `Corruption`
is what a solver did differently: the values it used (a misread number, a wrong unit
factor), the steps it wrote (a wrong operation, a dropped operand, an inverted rate)
and an arithmetic slip; evaluating the problem under it propagates the error to the
final answer as a real slip would, and the first wrong step is `Corruption.step`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Mapping

from cot_transplant.data.numbers import decimal_text

ERROR_KINDS = ("arithmetic", "wrong-operation", "dropped-quantity", "misread-number", "unit-rate")
APPLY = {"+": Fraction.__add__, "-": Fraction.__sub__, "*": Fraction.__mul__, "/": Fraction.__truediv__}
# Wrong operations a solver plausibly writes instead of the right one.
_OTHER_OP = {"+": ("-", "*"), "-": ("+",), "*": ("+", "/"), "/": ("*", "-")}
# Unit factors a solver plausibly confuses with the right one (60 minutes an hour read as 100, ...).
WRONG_UNIT = {60: (100, 30), 24: (12, 60), 7: (5, 10), 12: (10, 6), 100: (10, 1000), 52: (48, 12),
              9: (3, 12), 16: (12, 10), 1000: (100,), 4: (5, 2), 3: (12, 2)}
_LOOKALIKE = {"1": "7", "7": "1", "3": "8", "8": "3", "5": "6", "6": "5", "4": "9", "9": "4", "2": "7", "0": "8"}
MAX_PLACES = 3  # keep every value a number with at most 3 decimals, as a person would write it


@dataclass(frozen=True)
class Step:
    """Operands (quantity names or "@j" for step j's result) combined by `ops`, left to right.

    `frame` is the sentence in a solution: `{e}` stands for the worked expression "7 x 5 = 35" and
    `{name}` for a quantity of this step, as the solver read it. `short` is the same for `--short`.
    """

    args: tuple[str, ...]
    ops: tuple[str, ...]
    frame: str
    short: str = "{e}."


@dataclass(frozen=True)
class Problem:
    family: str
    question: str
    values: Mapping[str, Fraction]
    steps: tuple[Step, ...]
    units: frozenset[str] = frozenset()  # constants the solver knows; they are not in the question
    rates: frozenset[str] = frozenset()  # per-unit quantities (a price each, a speed)
    symbols: tuple[str, str] = ("x", "/")  # how the solution writes multiplication and division

    @property
    def given(self) -> list[str]:
        """Names of the quantities the question states."""
        return [k for k in self.values if k not in self.units]

    def first_use(self, name: str) -> int:
        """1-based number of the first step using quantity `name` (0 when none does)."""
        return next((j for j, s in enumerate(self.steps, 1) if name in s.args), 0)


@dataclass(frozen=True)
class Corruption:
    kind: str
    step: int  # 1-based: the first step whose result is wrong
    values: Mapping[str, Fraction]
    steps: tuple[Step, ...]
    slip: Fraction = Fraction(0)
    note: str = ""


def evaluate(problem: Problem, error: Corruption | None = None) -> list[Fraction]:
    """Each step's result, as the problem is meant to be solved or as `error` solves it.

    Raises:
        ZeroDivisionError: a step divides by zero (only ever under a corruption).
    """
    values = error.values if error else problem.values
    steps = error.steps if error else problem.steps
    results: list[Fraction] = []
    for j, step in enumerate(steps, 1):
        operands = [results[int(a[1:]) - 1] if a.startswith("@") else values[a] for a in step.args]
        acc = operands[0]
        for op, x in zip(step.ops, operands[1:]):
            acc = APPLY[op](acc, x)
        if error and j == error.step:
            acc += error.slip
        results.append(acc)
    return results


def _nice(x: Fraction) -> bool:
    return x > 0 and (x * 10**MAX_PLACES).denominator == 1


def problem_ok(problem: Problem) -> bool:
    """Every given value and step result is positive with at most MAX_PLACES decimals."""
    try:
        return all(_nice(v) for v in problem.values.values()) and all(_nice(v) for v in evaluate(problem))
    except ZeroDivisionError:
        return False


def corruption_ok(problem: Problem, right: list[Fraction], error: Corruption) -> bool:
    """The error first shows at `error.step`, every value stays a plausible number, the answer changes."""
    try:
        wrong = evaluate(problem, error)
    except ZeroDivisionError:
        return False
    k = error.step
    return (wrong[: k - 1] == right[: k - 1] and wrong[k - 1] != right[k - 1] and wrong[-1] != right[-1]
            and all(_nice(v) for v in wrong))


def _with_step(problem: Problem, k: int, step: Step) -> tuple[Step, ...]:
    return problem.steps[: k - 1] + (step,) + problem.steps[k:]


def _arithmetic(problem: Problem, k: int, right: list[Fraction], rng: random.Random):
    r = right[k - 1]
    deltas = [Fraction(d) for d in (1, -1, 2, -2, 10, -10)]
    text = decimal_text(r)
    if r.denominator == 1 and len(text) >= 2 and text[-1] != text[-2]:  # transposed last two digits
        deltas.append(Fraction(int(text[:-2] + text[-1] + text[-2])) - r)
    rng.shuffle(deltas)
    for d in deltas:
        yield Corruption("arithmetic", k, problem.values, problem.steps, d, f"step {k}: {decimal_text(r)} written as {decimal_text(r + d)}")


def _wrong_operation(problem: Problem, k: int, right, rng: random.Random):
    step = problem.steps[k - 1]
    positions = list(range(len(step.ops)))
    rng.shuffle(positions)
    for i in positions:
        others = list(_OTHER_OP[step.ops[i]])
        if len(step.ops) > 1:  # a chain of sums only flips + and -, so the text never needs brackets
            others = [o for o in others if o in "+-"]
        rng.shuffle(others)
        for op in others:
            ops = step.ops[:i] + (op,) + step.ops[i + 1:]
            yield Corruption("wrong-operation", k, problem.values, _with_step(problem, k, replace(step, ops=ops)),
                             note=f"step {k}: {op} instead of {step.ops[i]}")


def _dropped_quantity(problem: Problem, k: int, right, rng: random.Random):
    step = problem.steps[k - 1]
    # Leaving out operand i drops the operator before it; the first operand only goes in a sum or product.
    options = [i for i in range(1, len(step.args))]
    if len(step.args) == 2 and step.ops[0] in "+*":
        options.append(0)
    rng.shuffle(options)
    options.sort(key=lambda i: step.args[i].startswith("@"))  # prefer a quantity from the question
    for i in options:
        args = step.args[:i] + step.args[i + 1:]
        ops = step.ops[1:] if i == 0 else step.ops[: i - 1] + step.ops[i:]
        yield Corruption("dropped-quantity", k, problem.values,
                         _with_step(problem, k, replace(step, args=args, ops=ops)),
                         note=f"step {k}: left out {step.args[i]}")


def misreadings(value: Fraction) -> list[Fraction]:
    """Numbers a reader might see instead of `value`: two digits swapped, one digit read as a look-alike."""
    text = decimal_text(value)
    out = []
    for i in range(len(text) - 1):
        if text[i] != text[i + 1] and "." not in text[i:i + 2]:
            out.append(text[:i] + text[i + 1] + text[i] + text[i + 2:])
    for i, ch in enumerate(text):
        if ch in _LOOKALIKE:
            out.append(text[:i] + _LOOKALIKE[ch] + text[i + 1:])
    return [Fraction(t) for t in dict.fromkeys(out) if not (t[0] == "0" and len(t) > 1 and t[1] != ".")]


def _misread_number(problem: Problem, k: int, right, rng: random.Random):
    names = [q for q in problem.given if problem.first_use(q) == k]
    rng.shuffle(names)
    for name in names:
        options = misreadings(problem.values[name])
        rng.shuffle(options)
        for v in options:
            yield Corruption("misread-number", k, {**problem.values, name: v}, problem.steps,
                             note=f"read {decimal_text(problem.values[name])} as {decimal_text(v)}")


def _unit_rate(problem: Problem, k: int, right, rng: random.Random):
    step = problem.steps[k - 1]
    options = []
    for name in step.args:
        if name in problem.units and problem.first_use(name) == k:  # a wrong conversion factor
            for v in WRONG_UNIT.get(int(problem.values[name]), ()):
                options.append(Corruption("unit-rate", k, {**problem.values, name: Fraction(v)}, problem.steps,
                                          note=f"{decimal_text(problem.values[name])} per unit taken as {v}"))
    if len(step.args) == 2 and step.ops[0] in "*/" and any(a in problem.units or a in problem.rates for a in step.args):
        flipped = replace(step, ops=("/" if step.ops[0] == "*" else "*",))  # a rate applied the wrong way round
        options.append(Corruption("unit-rate", k, problem.values, _with_step(problem, k, flipped),
                                  note=f"step {k}: rate inverted"))
    rng.shuffle(options)
    yield from options


_MAKERS = {"arithmetic": _arithmetic, "wrong-operation": _wrong_operation, "dropped-quantity": _dropped_quantity,
           "misread-number": _misread_number, "unit-rate": _unit_rate}


def corrupt(problem: Problem, kind: str, k: int, rng: random.Random,
            right: list[Fraction] | None = None) -> Corruption | None:
    """A valid corruption of `kind` whose first wrong step is `k` (1-based), or None when none exists."""
    right = right if right is not None else evaluate(problem)
    for error in _MAKERS[kind](problem, k, right, rng):
        if corruption_ok(problem, right, error):
            return error
    return None


def _number(x: Fraction) -> str:
    return decimal_text(x)


def render(problem: Problem, error: Corruption | None = None, *, short: bool = False) -> list[str]:
    """The solution's sentences, one per step, each with its worked expression ("7 x 5 = 35")."""
    values = error.values if error else problem.values
    steps = error.steps if error else problem.steps
    results = evaluate(problem, error)
    symbol = {"+": "+", "-": "-", "*": problem.symbols[0], "/": problem.symbols[1]}
    named = {k: _number(v) for k, v in values.items()}
    out = []
    for step, result in zip(steps, results):
        operands = [results[int(a[1:]) - 1] if a.startswith("@") else values[a] for a in step.args]
        expr = _number(operands[0])
        for op, x in zip(step.ops, operands[1:]):
            expr += f" {symbol[op]} {_number(x)}"
        expr = expr + f" = {_number(result)}" if step.ops else _number(result)
        # Frames may restate quantities by name ("{times0} times"): written as the solver read them.
        out.append((step.short if short else step.frame).format(e=expr, **named))
    return out
