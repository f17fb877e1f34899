"""Train/validation/test splits: seeded random fractions, grouped by question, or the original study's test rows.

`random` splits rows; a question that occurs in two rows can then sit in train and in test.
`grouped` deals whole questions (`question_key`) to the splits, so no question crosses two.
`original` keeps the original study's 275 test rows exactly, carves validation by question,
and drops from train/val every row whose question also occurs in a test row (`dropped`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cot_transplant.errors import UserError

ORIGINAL_ROWS = 2748
ORIGINAL_TEST = 275  # Hugging Face train_test_split(test_size=0.1, seed=1) on the 2,748 rows
SPLITS = ("train", "val", "test")  # the keys holding row ids; a split may also hold `dropped`
KINDS = ("random", "grouped", "original")
DROPPED_REASON = "question also in a test row"


def question_key(text: str) -> str:
    """A question as splits compare them: stripped, whitespace runs collapsed to one space, lowercased."""
    return " ".join(text.split()).lower()


def _keys(rows: int | Sequence[str]) -> list[str]:
    """One key per row: the normalized questions, or (for a bare row count) each row its own question."""
    if isinstance(rows, int):
        return [str(i) for i in range(rows)]
    return [question_key(q) for q in rows]


def _deal(order: Sequence[int], keys: Sequence[str], sizes: Sequence[int]) -> list[list[int]]:
    """Rows dealt to len(sizes) + 1 buckets by question, walking `order`.

    At a question's first row in `order`, all its rows go to the first bucket still below its size;
    the last bucket takes what is left. A bucket can pass its size by a group's size minus one.
    With every question distinct, bucket j is simply the next sizes[j] rows of `order`.
    """
    members: dict[str, list[int]] = {}
    for i in order:
        members.setdefault(keys[i], []).append(i)
    buckets: list[list[int]] = [[] for _ in range(len(sizes) + 1)]
    for i in order:
        group = members.pop(keys[i], None)
        if group is None:  # dealt with an earlier row of its question
            continue
        j = next((j for j, size in enumerate(sizes) if len(buckets[j]) < size), len(sizes))
        buckets[j].extend(group)
    return buckets


def _sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_test = math.ceil(test_fraction * n) if test_fraction > 0 else 0
    n_val = math.ceil(val_fraction * n) if val_fraction > 0 else 0
    return n_val, n_test


def _no_train(n: int, val_fraction: float, test_fraction: float) -> UserError:
    return UserError(f"data: {n} rows leave no train rows with val_fraction={val_fraction}, "
                     f"test_fraction={test_fraction}; use more rows or smaller fractions")


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split from one seeded permutation: test first, then val, then train."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = _sizes(n, val_fraction, test_fraction)
    if n - n_test - n_val < 1:
        raise _no_train(n, val_fraction, test_fraction)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {"train": sorted(train.tolist()), "val": sorted(val.tolist()), "test": sorted(test.tolist())}


def grouped_split(rows: int | Sequence[str], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[int]]:
    """`random_split`'s permutation and sizes, dealt by question: all rows of a question share one split.

    Test and val take whole questions until they reach their sizes, so each may hold one group's extra
    rows. With every question distinct (or a bare row count for `rows`) this is exactly `random_split`.
    """
    keys = _keys(rows)
    n = len(keys)
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val, n_test = _sizes(n, val_fraction, test_fraction)
    test, val, train = _deal(order, keys, [n_test, n_val])
    if not train:
        raise _no_train(n, val_fraction, test_fraction)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def original_split(rows: int | Sequence[str], val_fraction: float, seed: int) -> dict:
    """The original study's split: test = the first 275 of default_rng(1).permutation(2748).

    Validation is carved by question from the original train part, seeded by `seed` (the original had
    none). Train/val rows whose question also occurs in a test row are left out of every split and
    named in `dropped` ({"count", "reason", "rows"}). `rows`: the questions, or a bare row count (then
    each row is its own question and nothing is dropped).
    """
    keys = _keys(rows)
    n = len(keys)
    if n != ORIGINAL_ROWS:
        raise UserError(f"data.split 'original' needs the original 2,748-row CSV, got {n} rows; "
                        "use data.split=random or grouped for other data")
    order = np.random.default_rng(1).permutation(n)
    test, rest = order[:ORIGINAL_TEST].tolist(), np.random.default_rng(seed).permutation(order[ORIGINAL_TEST:])
    in_test = {keys[i] for i in test}
    dropped = sorted(i for i in rest.tolist() if keys[i] in in_test)
    kept = [i for i in rest.tolist() if keys[i] not in in_test]
    n_val = math.ceil(val_fraction * len(kept)) if val_fraction > 0 else 0
    val, train = _deal(kept, keys, [n_val])
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test),
            "dropped": {"count": len(dropped), "reason": DROPPED_REASON, "rows": dropped}}


def make_split(kind: str, rows: int | Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Row ids per split name (`SPLITS`) for `data.split` `kind`; `original` adds `dropped`.

    `rows`: the rows' questions (what `grouped` and `original` group by), or a bare row count, read as
    every row its own question.
    """
    if kind == "original":
        return original_split(rows, val_fraction, seed)
    if kind == "grouped":
        return grouped_split(rows, val_fraction, test_fraction, seed)
    n = rows if isinstance(rows, int) else len(rows)
    return random_split(n, val_fraction, test_fraction, seed)


def describe_dropped(split: dict) -> str | None:
    """One line about the rows a split left out (`dropped`), or None for a split that drops none by design."""
    dropped = split.get("dropped")
    if dropped is None:
        return None
    n = dropped["count"]
    return (f"data.split: {n} row{'s' * (n != 1)} left out of train/val ({dropped['reason']}); "
            f"{len(split['train'])} train, {len(split['val'])} val, {len(split['test'])} test")
