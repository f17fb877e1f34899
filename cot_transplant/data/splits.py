"""Train/validation/test splits: seeded random fractions, or the original study's exact test rows."""

from __future__ import annotations

import math

import numpy as np

from cot_transplant.errors import UserError

ORIGINAL_ROWS = 2748
ORIGINAL_TEST = 275  # Hugging Face train_test_split(test_size=0.1, seed=1) on the 2,748 rows


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split from one seeded permutation: test first, then val, then train."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = math.ceil(test_fraction * n) if test_fraction > 0 else 0
    n_val = math.ceil(val_fraction * n) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise UserError(f"data: {n} rows leave no train rows with val_fraction={val_fraction}, "
                        f"test_fraction={test_fraction}; use more rows or smaller fractions")
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {"train": sorted(train.tolist()), "val": sorted(val.tolist()), "test": sorted(test.tolist())}


def original_split(n: int, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """The original study's split: test = the first 275 of default_rng(1).permutation(2748).

    Validation is carved from the original train part, seeded by `seed` (the original had none).
    """
    if n != ORIGINAL_ROWS:
        raise UserError(f"data.split 'original' needs the original 2,748-row CSV, got {n} rows; "
                        "use data.split=random for other data")
    order = np.random.default_rng(1).permutation(n)
    test, rest = order[:ORIGINAL_TEST], order[ORIGINAL_TEST:]
    n_val = math.ceil(val_fraction * len(rest)) if val_fraction > 0 else 0
    rest = np.random.default_rng(seed).permutation(rest)
    return {"train": sorted(rest[n_val:].tolist()), "val": sorted(rest[:n_val].tolist()),
            "test": sorted(test.tolist())}


def make_split(kind: str, n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    if kind == "original":
        return original_split(n, val_fraction, seed)
    return random_split(n, val_fraction, test_fraction, seed)
