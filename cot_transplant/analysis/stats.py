"""Statistics for honest reporting across runs: t intervals (or the range) across seeds, a paired permutation
test with Holm's correction, CI bands over runs. Pure numpy (scipy imported where needed); no torch.

One split's figures (the Wilson interval of f_c) are `runs.metrics`'s; the validation-only checkpoint choice is
`runs.summary.select_checkpoint`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike

_CHUNK = 4_000_000  # elements per (resamples x rows) block: bounds memory on large splits
# Fewest values for a t interval: with two, t_1 = 12.7 gives an interval that says nothing, so fewer
# values are reported as themselves and their range.
MIN_T_VALUES = 3
FRACTION = (0.0, 1.0)  # bounds of a fraction metric (f_c, AUROC, agree, base rate): t intervals are clipped to it


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    The j-th smallest of m p-values becomes max over i <= j of min(1, (m - i + 1) * p_(i)):
    rejecting where the adjusted p < alpha keeps the family-wise error rate at alpha.
    Raises ValueError on a value outside [0, 1] (NaN included).
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted.tolist()


def mean_ci(values: ArrayLike, alpha: float = 0.05,
            bounds: tuple[float, float] | None = None) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) across runs with a Student t interval: mean +- t_{n-1} * sd / sqrt(n).

    A t interval, not a bootstrap, because runs are few (3-5 seeds): a bootstrap over
    five values is far too narrow. Assumes roughly normal per-run values. NaN and None
    entries are dropped; with fewer than MIN_T_VALUES (3) values low/high are None (see
    `seed_interval` for what to report instead); with none, everything is None. `bounds`
    clips the interval, e.g. FRACTION for f_c (None for a loss).
    """
    v = _finite(values)
    if len(v) == 0:
        return None, None, None
    mean = float(v.mean())
    if len(v) < MIN_T_VALUES:
        return mean, None, None
    from scipy import stats as st  # here, not at the top: `cot-transplant plot` never needs scipy

    half = float(st.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return mean, low, high


def seed_interval(values: ArrayLike, alpha: float = 0.05, bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean across seeds and the interval to report it with: {"mean", "ci_low", "ci_high", "interval", "n"}.

    With MIN_T_VALUES (3) or more values, `interval` is "t": the t interval of `mean_ci`, clipped
    to `bounds`. With fewer it is "range": ci_low/ci_high are the smallest and largest value,
    never a t interval. No values: all None. NaN and None entries are dropped.
    """
    v = _finite(values)
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "interval": None, "n": 0}
    if len(v) < MIN_T_VALUES:
        return {"mean": float(v.mean()), "ci_low": float(v.min()), "ci_high": float(v.max()), "interval": "range",
                "n": len(v)}
    mean, low, high = mean_ci(v, alpha, bounds)
    return {"mean": mean, "ci_low": low, "ci_high": high, "interval": "t", "n": len(v)}


def _finite(values: Iterable[Any]) -> np.ndarray:
    """The values as float64, with None and NaN dropped."""
    v = np.array([np.nan if x is None else x for x in np.asarray(values, dtype=object).reshape(-1)],
                 dtype=np.float64)
    return v[~np.isnan(v)]


def paired_permutation_test(correct_a: ArrayLike, correct_b: ArrayLike, n_perm: int = 10_000,
                            seed: int = 0) -> float:
    """Two-sided p-value that systems a and b score the same, paired by test row.

    Under the null the per-row difference d = a - b is symmetric about 0, so each
    row's sign is flipped at random; the statistic is |sum d|. Rows with d == 0 carry
    no information and are dropped. With at most log2(n_perm) differing rows every
    sign pattern is enumerated (exact); else `n_perm` random patterns give
    (1 + #{|T*| >= |T|}) / (1 + n_perm), never 0. Identical inputs give exactly 1.0.
    On 0/1 correctness this is the exact/Monte Carlo McNemar test.
    """
    a = np.asarray(correct_a, dtype=np.float64).reshape(-1)
    b = np.asarray(correct_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
    d = (a - b)[a != b]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-9 * np.abs(d).sum()  # float sums of the same terms in another order differ in the last bits
    if 2 ** d.size <= n_perm:
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d.size)))  # (2^m, m)
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    block = max(1, _CHUNK // d.size)
    extreme = 0
    for start in range(0, n_perm, block):
        signs = rng.choice((-1.0, 1.0), size=(min(block, n_perm - start), d.size))  # (perms, m)
        extreme += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + extreme) / (1 + n_perm)


class Band(NamedTuple):
    """Mean and interval across runs at each `samples` point (see `seed_interval`).

    `low`/`high` are the (1 - alpha) t interval where `interval` is "t" (3+ runs), the runs'
    min and max where it is "range"; `n` is the number of runs that contributed.
    """

    samples: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray
    interval: tuple[str, ...] = ()


def ci_band(curves: Sequence[Iterable[tuple[float, float | None]]], alpha: float = 0.05,
            bounds: tuple[float, float] | None = None) -> Band:
    """Per-`samples` `seed_interval` over several runs' (samples, value) series; t intervals clipped to `bounds`.

    Points are matched on exact `samples` values (runs of one sweep evaluate at the
    same counts); a run missing a point or logging None there just does not count.
    """
    by_samples: dict[float, list[Any]] = {}
    for series in curves:
        for samples, value in series:
            by_samples.setdefault(samples, []).append(value)
    xs = sorted(by_samples)
    rows = [seed_interval(by_samples[x], alpha, bounds) for x in xs]
    as_array = lambda k: np.array([np.nan if r[k] is None else r[k] for r in rows], dtype=np.float64)  # noqa: E731
    return Band(
        samples=np.array(xs, dtype=np.float64),
        mean=as_array("mean"),
        low=as_array("ci_low"),
        high=as_array("ci_high"),
        n=np.array([r["n"] for r in rows], dtype=np.int64),
        interval=tuple(r["interval"] for r in rows),
    )


def seeds_rows_bootstrap(a: ArrayLike, b: ArrayLike | None = None, n_boot: int = 10_000, alpha: float = 0.05,
                         seed: int = 0) -> dict[str, float]:
    """Mean of a (or of a - b) with a bootstrap interval that covers both seeds and rows.

    `a` and `b` are (seeds, rows) per-row scores (1/0.5/0) of the same test rows, `b`'s seeds paired
    with `a`'s (the same training seed: one data order). Each resample draws seeds with replacement
    and, independently, rows with replacement, the same rows for a and b; the statistic is the mean
    over the drawn seeds and rows. With one seed it is the bootstrap over rows alone, so the interval
    is never narrower than what one run's rows support. Returns {"mean", "ci_low", "ci_high", "seeds", "rows"}
    (percentile interval).
    """
    x = np.atleast_2d(np.asarray(a, dtype=np.float64))
    if b is not None:
        y = np.atleast_2d(np.asarray(b, dtype=np.float64))
        if y.shape != x.shape:
            raise ValueError(f"bootstrap: a and b need the same (seeds, rows) shape, got {x.shape} and {y.shape}")
        x = x - y
    n_seeds, n_rows = x.shape
    if n_rows == 0:
        raise ValueError("bootstrap: no rows")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    block = max(1, _CHUNK // max(1, n_rows * n_seeds))
    for start in range(0, n_boot, block):
        k = min(block, n_boot - start)
        seeds = rng.integers(0, n_seeds, size=(k, n_seeds))
        rows = rng.integers(0, n_rows, size=(k, n_rows))
        per_seed = x[:, rows]  # (n_seeds, k, n_rows): every seed's scores on each resample's rows
        means = per_seed.mean(axis=2).T  # (k, n_seeds)
        stats[start:start + k] = np.take_along_axis(means, seeds, axis=1).mean(axis=1)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high), "seeds": n_seeds,
            "rows": n_rows}


def min_detectable_effect(n_rows: int, discordance: float, alpha: float = 0.05, power: float = 0.8,
                          comparisons: int = 1) -> float:
    """Smallest difference in f_c a paired two-sided test on `n_rows` rows detects with `power`.

    Normal approximation to the paired (McNemar-type) test on per-row differences d in {-1, 0, 1}:
    sd(d) <= sqrt(discordance), the share of rows where the two systems disagree, so
    MDE = (z_{1 - alpha'/2} + z_{power}) * sqrt(discordance / n_rows), with alpha' = alpha / comparisons
    (Holm's first step, the strictest). Averaging each row over seeds only lowers sd(d): this is the
    one-seed, conservative figure.
    """
    from scipy.stats import norm

    if n_rows < 1 or not 0 < discordance <= 1 or not 0 < alpha < 1 or not 0 < power < 1 or comparisons < 1:
        raise ValueError("min_detectable_effect: need n_rows >= 1, 0 < discordance <= 1, 0 < alpha, power < 1, "
                         "comparisons >= 1")
    z = norm.ppf(1 - alpha / comparisons / 2) + norm.ppf(power)
    return float(z * math.sqrt(discordance / n_rows))
