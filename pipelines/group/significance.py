"""Uncertainty of a probe's out-of-fold score: permutation p-value, bootstrap interval, smallest detectable r.

The permutation test shuffles the target and reruns the whole nested cross-validation on the same folds, so
the null distribution includes the choice of the regularisation strength (an out-of-fold score of shuffled
labels is often below zero, not at zero). The bootstrap resamples participants with their out-of-fold
predictions; it shows how far the score could move with another sample of the same size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

#: Label shuffles of the permutation test and resamples of the bootstrap, unless told otherwise.
PERMUTATIONS = 1000
BOOTSTRAPS = 1000


def pearson_columns(truth: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Pearson r of ``truth`` (N,) or (N, P) with each column of ``predictions`` (N, P); (P,)."""
    truth = truth.reshape(len(truth), -1)
    a = truth - truth.mean(axis=0)
    b = predictions - predictions.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


def permutation_p(
    observed: float,
    target: np.ndarray,
    null_scores: Callable[[np.ndarray], np.ndarray],
    *,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> float:
    """One-sided permutation p-value, (1 + #{null >= observed}) / (1 + permutations).

    Parameters
    ----------
    observed : float
        The score of the real target (higher is better).
    target : ndarray, shape (N,)
    null_scores : callable
        ``shuffled targets (N, P) -> scores (P,)``, running the same cross-validation as for ``observed``.
    permutations : int
    seed : int
    """
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(target) for _ in range(permutations)], axis=1)
    null = np.asarray(null_scores(shuffled), dtype=np.float64)
    null = np.where(np.isfinite(null), null, -np.inf)
    return float((1 + np.count_nonzero(null >= observed)) / (1 + permutations))


def bootstrap_interval(
    truth: np.ndarray,
    predictions: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    *,
    resamples: int = BOOTSTRAPS,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``score(truth, predictions)`` over participants resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    values = []
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        value = score(truth[rows], predictions[rows])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def smallest_detectable_r(n: int, alpha: float = 0.05) -> float:
    """The Pearson r that a sample of ``n`` must exceed to be significant one-sided at ``alpha``."""
    if n <= 2:
        return float("nan")
    t = stats.t.ppf(1 - alpha, n - 2)
    return float(t / np.sqrt(n - 2 + t * t))
