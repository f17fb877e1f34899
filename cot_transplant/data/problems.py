"""Structured arithmetic word problems and their controlled corruption.

A `Problem` is a question plus the exact steps that solve it: each step combines given
quantities, known unit constants (60 minutes an hour) and earlier results ("@1") with
+ - * /, left to right. Values are `Decimal`s computed in a context that refuses any
inexact result, so answers are exact (integers or terminating decimals). A `Corruption`
is what a solver did differently: the values it used (a misread number, a wrong unit
factor), the steps it wrote (a wrong operation, a dropped operand, an inverted rate)
and an arithmetic slip; evaluating the problem under it propagates the error to the
final answer as a real slip would, and the first wrong step is `Corruption.step`.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, replace
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation
from typing import Mapping

from cot_transplant.data.numbers import decimal_str, decimal_text

ERROR_KINDS = ("arithmetic", "wrong-operation", "dropped-quantity", "misread-number", "unit-rate")
# Exact arithmetic: a result that would need rounding (1/3) raises Inexact instead.
EXACT = Context(prec=50, traps=[Inexact, DivisionByZero, InvalidOperation])
APPLY = {"+": EXACT.add, "-": EXACT.subtract, "*": EXACT.multiply, "/": EXACT.divide}
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
    values: Mapping[str, Decimal]
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
        return self._first_uses.get(name, 0)

    @functools.cached_property
    def _first_uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for j, step in enumerate(self.steps, 1):
            for a in step.args:
                uses.setdefault(a, j)
        return uses


@dataclass(frozen=True)
class Corruption:
    kind: str
    step: int  # 1-based: the first step whose result is wrong
    values: Mapping[str, Decimal]
    steps: tuple[Step, ...]
    slip: Decimal = Decimal(0)
    note: str = ""


def evaluate(problem: Problem, error: Corruption | None = None) -> list[Decimal]:
    """Each step's result, as the problem is meant to be solved or as `error` solves it.

    Raises:
        ArithmeticError: a step divides by zero or has no exact result (only under a corruption).
    """
    values = error.values if error else problem.values
    steps = error.steps if error else problem.steps
    results: list[Decimal] = []
    for j, step in enumerate(steps, 1):
        operands = [results[int(a[1:]) - 1] if a[0] == "@" else values[a] for a in step.args]
        acc = operands[0]
        for op, x in zip(step.ops, operands[1:]):
            acc = APPLY[op](acc, x)
        if error and j == error.step:
            acc = EXACT.add(acc, error.slip)
        results.append(acc)
    return results


def _nice(x: Decimal) -> bool:
    return x > 0 and 10**MAX_PLACES % x.as_integer_ratio()[1] == 0


def problem_ok(problem: Problem, results: list[Decimal] | None = None) -> bool:
    """Every given value and step result is positive with at most MAX_PLACES decimals.

    `results`: `evaluate(problem)` when the caller has it already.
    """
    try:
        results = evaluate(problem) if results is None else results
    except ArithmeticError:
        return False
    return all(_nice(v) for v in problem.values.values()) and all(_nice(v) for v in results)


def corrupted_results(problem: Problem, right: list[Decimal], error: Corruption) -> list[Decimal] | None:
    """The step results under `error` when it is valid: it first shows at `error.step`, every value stays
    a plausible number, the answer changes. None otherwise."""
    try:
        wrong = evaluate(problem, error)
    except ArithmeticError:
        return None
    k = error.step
    ok = (wrong[: k - 1] == right[: k - 1] and wrong[k - 1] != right[k - 1] and wrong[-1] != right[-1]
          and all(_nice(v) for v in wrong))
    return wrong if ok else None


def _with_step(problem: Problem, k: int, step: Step) -> tuple[Step, ...]:
    return problem.steps[: k - 1] + (step,) + problem.steps[k:]


def _arithmetic(problem: Problem, k: int, right: list[Decimal], rng: random.Random):
    r = right[k - 1]
    deltas = [Decimal(d) for d in (1, -1, 2, -2, 10, -10)]
    text = decimal_text(r)
    if "." not in text and len(text) >= 2 and text[-1] != text[-2]:  # transposed last two digits
        deltas.append(Decimal(text[:-2] + text[-1] + text[-2]) - r)
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


def misreadings(value: Decimal) -> list[Decimal]:
    """Numbers a reader might see instead of `value`: two digits swapped, one digit read as a look-alike."""
    text = decimal_text(value)
    out = []
    for i in range(len(text) - 1):
        if text[i] != text[i + 1] and "." not in text[i:i + 2]:
            out.append(text[:i] + text[i + 1] + text[i] + text[i + 2:])
    for i, ch in enumerate(text):
        if ch in _LOOKALIKE:
            out.append(text[:i] + _LOOKALIKE[ch] + text[i + 1:])
    return [Decimal(t) for t in dict.fromkeys(out) if not (t[0] == "0" and len(t) > 1 and t[1] != ".")]


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
                options.append(Corruption("unit-rate", k, {**problem.values, name: Decimal(v)}, problem.steps,
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
            right: list[Decimal] | None = None) -> tuple[Corruption, list[Decimal]] | None:
    """A valid corruption of `kind` whose first wrong step is `k` (1-based) with its step results,
    or None when none exists."""
    right = right if right is not None else evaluate(problem)
    for error in _MAKERS[kind](problem, k, right, rng):
        wrong = corrupted_results(problem, right, error)
        if wrong is not None:
            return error, wrong
    return None


def render(problem: Problem, error: Corruption | None = None, *, short: bool = False,
           results: list[Decimal] | None = None) -> list[str]:
    """The solution's sentences, one per step, each with its worked expression ("7 x 5 = 35").

    `results`: `evaluate(problem, error)` when the caller has it already.
    """
    values = error.values if error else problem.values
    steps = error.steps if error else problem.steps
    results = evaluate(problem, error) if results is None else results
    symbol = {"+": " + ", "-": " - ", "*": f" {problem.symbols[0]} ", "/": f" {problem.symbols[1]} "}
    # Frames may restate their step's quantities by name ("{times0} times"), as the solver read them.
    named = {k: decimal_str(v) for k, v in values.items()}
    done = [decimal_str(r) for r in results]
    out = []
    for step, text in zip(steps, done):
        operands = [done[int(a[1:]) - 1] if a[0] == "@" else named[a] for a in step.args]
        expr = operands[0]
        for op, x in zip(step.ops, operands[1:]):
            expr += symbol[op] + x
        expr = expr + " = " + text if step.ops else text
        out.append((step.short if short else step.frame).format(e=expr, **named))
    return out
