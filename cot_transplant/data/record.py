"""One typed record per dataset row, in the original study's terms.

Answers stay as the text they were written as ("47.0"), so a file reads and writes
back byte for byte; `float(record.correct_answer)` gives the number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Original CSV columns, in the original order.
COLUMNS = (
    "Question",
    "Correct Answer",
    "Correct Argument",
    "Incorrect Answer",
    "Incorrect Argument",
    "Choice Answer",
    "Choice Argument",
    "Choice Answers Swapped",
)
PAIR_COLUMNS = COLUMNS[:5]
CHOICE_COLUMNS = COLUMNS[5:]
CANDIDATES = ("candidate_1", "candidate_2")


@dataclass
class Record:
    """A question with a correct and an incorrect chain of thought and (optionally) a choice argument.

    `swapped` True means the incorrect answer is shown as candidate 1. `choice_answer`
    names a position after the swap. `extra` keeps every other column (metadata such
    as `error_kind`, `error_step`, `n_steps`, `source`, `id`) as text, in file order.
    """

    question: str
    correct_answer: str
    correct_argument: str
    incorrect_answer: str
    incorrect_argument: str
    choice_answer: str | None = None
    choice_argument: str | None = None
    swapped: bool | None = None
    row_id: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def has_choice(self) -> bool:
        return self.choice_answer is not None and self.choice_argument is not None and self.swapped is not None

    @property
    def label(self) -> int:
        """Position (1 or 2) of the correct candidate after the swap."""
        return 2 if self.swapped else 1

    @property
    def argument_choice(self) -> int:
        """Position (1 or 2) the choice argument picked."""
        return 1 if self.choice_answer == "candidate_1" else 2

    @property
    def argument_correct(self) -> bool:
        """The original rule: (Choice Answer == candidate_1) XOR Swapped."""
        return (self.choice_answer == "candidate_1") != bool(self.swapped)

    def candidates(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """((answer, argument) of candidate 1, (answer, argument) of candidate 2), in shown order."""
        right = (self.correct_answer, self.correct_argument)
        wrong = (self.incorrect_answer, self.incorrect_argument)
        return (wrong, right) if self.swapped else (right, wrong)
