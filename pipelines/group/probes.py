"""Probes: does a subject embedding predict a participant's age, sex, diagnosis...?

Ridge regression for continuous targets and a ridge classifier (one-vs-rest, -1/+1 targets) for categorical
ones, on standardised features, with nested cross-validation (inner: the regularisation strength; outer: the
score) and fixed seeds. Both are computed in kernel form (:mod:`pipelines.group.nested_ridge`), so a
permutation test reruns the whole nested cross-validation for 1,000 shuffled targets in about the time of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from pipelines.errors import InputDataError
from pipelines.group.nested_ridge import NestedRidge, fit_ridge
from pipelines.group.significance import (
    PERMUTATIONS,
    bootstrap_interval,
    pearson_columns,
    permutation_p,
    smallest_detectable_r,
)
from pipelines.heads import LinearHead

MIN_SUBJECTS = 6
#: Ridge penalties per feature: the grid is these times F, since the kernel X X' of F standardised features grows
#: with F. A fixed grid leaves 100,000 connectome edges almost unregularised (out-of-fold errors of 1e10 on the
#: demo's SC edges), while 128 embedding features get 0.0128 ... 12,800.
ALPHAS_PER_FEATURE = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)


def alpha_grid(n_features: int) -> tuple[float, ...]:
    """The ridge penalties searched for ``n_features`` standardised features."""
    return tuple(a * n_features for a in ALPHAS_PER_FEATURE)


@dataclass
class ProbeScore:
    """Out-of-fold predictions (N,) and metrics of one probe, with the fold counts it used."""

    task: Literal["regression", "classification"]
    predictions: np.ndarray
    metrics: dict[str, Any]
    outer_folds: int
    inner_folds: int


@dataclass
class ProbeResult:
    """Out-of-fold predictions, metrics, and the head refit on all subjects."""

    target: str
    task: Literal["regression", "classification"]
    predictions: np.ndarray  # (N,) out-of-fold predictions (values or labels)
    metrics: dict[str, Any]
    head: LinearHead


def target_task(values: np.ndarray) -> Literal["regression", "classification"]:
    """``classification`` for text or few-valued integer targets, else ``regression``."""
    values = np.asarray(values)
    if values.dtype.kind in "OUSb":
        return "classification"
    unique = np.unique(values[np.isfinite(values.astype(float))])
    if values.dtype.kind in "iu" and len(unique) <= 10:
        return "classification"
    return "regression"


def score_probe(
    features: np.ndarray,
    target: np.ndarray,
    *,
    name: str,
    seed: int = 0,
    outer_folds: int = 5,
    inner_folds: int = 3,
    permutations: int = PERMUTATIONS,
) -> ProbeScore:
    """Out-of-fold score of a nested cross-validated probe of ``target`` from ``features``.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        Subject features (rows with missing targets must be removed by the caller).
    target : ndarray, shape (N,)
        Continuous values or class labels.
    name : str
        Target name (for messages).
    seed : int
        Seed of every fold split.
    outer_folds, inner_folds : int
        Folds of the outer (scoring) and inner (hyper-parameter) loops; reduced for small samples and classes.
        At least :data:`MIN_SUBJECTS` subjects are needed.
    permutations : int
        Shuffles of the target for the permutation p-value of the out-of-fold score (0: none). Each reruns
        the whole nested cross-validation on the same folds (cheap in :mod:`pipelines.group.nested_ridge`).

    Returns
    -------
    ProbeScore
        Metrics: ``mse``, ``pearson_r``, ``spearman_rho`` (regression) or ``accuracy``, ``f1``, ``auc``
        (classification), plus ``chance`` and the number of subjects; ``permutation_p`` of ``pearson_r``
        (regression) or ``accuracy``, its ``interval95`` (bootstrap over participants) and
        ``smallest_significant_r`` (regression: the r that n participants must exceed at p < 0.05).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    x = np.asarray(features, dtype=np.float64)
    if len(x) < MIN_SUBJECTS:
        raise InputDataError(
            f"probe '{name}': {len(x)} participants have a value; nested cross-validation needs "
            f"at least {MIN_SUBJECTS}."
        )
    outer_folds = max(2, min(outer_folds, len(x) // 2))
    inner_folds = max(2, min(inner_folds, (len(x) - len(x) // outer_folds) // 2))
    task = target_task(target)
    y = np.asarray(target, dtype=object if task == "classification" else np.float64)
    if task == "classification":
        y = y.astype(str)
        smallest = min(np.unique(y, return_counts=True)[1])
        outer_folds = max(2, min(outer_folds, smallest))
        inner_folds = max(2, min(inner_folds, smallest - 1 if smallest > 2 else 2))
        outer, inner = (StratifiedKFold(k, shuffle=True, random_state=seed) for k in (outer_folds, inner_folds))
    else:
        outer, inner = (KFold(k, shuffle=True, random_state=seed) for k in (outer_folds, inner_folds))
    ridge = NestedRidge(
        x, alphas=alpha_grid(x.shape[1]), outer=outer, inner=inner, labels=y if task == "classification" else None
    )
    if task == "regression":
        oof = ridge.predict(y)
        metrics = _metrics(task, y, oof, None)
        metrics["interval95"] = bootstrap_interval(y, oof, _pearson, seed=seed)
        metrics["smallest_significant_r"] = smallest_detectable_r(len(y))
        observed, null = metrics["pearson_r"], lambda shuffled: pearson_columns(shuffled, ridge.predict(shuffled))
    else:
        classes = np.unique(y)
        decision = ridge.predict(_one_vs_rest(y, classes)[:, None, :], select="accuracy")[:, 0]  # (N, K)
        oof = classes[decision.argmax(axis=1)]
        metrics = _metrics(task, y, oof, _softmax(decision))
        metrics["interval95"] = bootstrap_interval(y, oof, _accuracy, seed=seed)

        def null(shuffled: np.ndarray) -> np.ndarray:  # (N, P) labels -> (P,) accuracies
            coded = np.stack([_one_vs_rest(column, classes) for column in shuffled.T], axis=1)
            guessed = ridge.predict(coded, select="accuracy").argmax(-1)
            return (classes[guessed] == shuffled).mean(axis=0)

        observed = metrics["accuracy"]
    if permutations:
        metrics["permutation_p"] = permutation_p(observed, y, null, permutations=permutations, seed=seed)
    metrics["permutations"] = permutations
    return ProbeScore(task=task, predictions=oof, metrics=metrics, outer_folds=outer_folds, inner_folds=inner_folds)


def run_probe(
    features: np.ndarray,
    target: np.ndarray,
    *,
    name: str,
    feature_names: list[str],
    seed: int = 0,
    outer_folds: int = 5,
    inner_folds: int = 3,
    permutations: int = PERMUTATIONS,
) -> ProbeResult:
    """:func:`score_probe`, then the head refit on all subjects (``feature_names``: the F column names)."""
    x = np.asarray(features, dtype=np.float64)
    scored = score_probe(
        x, target, name=name, seed=seed, outer_folds=outer_folds, inner_folds=inner_folds, permutations=permutations
    )
    from sklearn.model_selection import KFold, StratifiedKFold

    classification = scored.task == "classification"
    y = np.asarray(target, dtype=str if classification else np.float64)
    classes = np.unique(y) if classification else np.array([])
    splitter = StratifiedKFold if classification else KFold
    fit = fit_ridge(
        x,
        _one_vs_rest(y, classes) if classification else y[:, None],
        alphas=alpha_grid(x.shape[1]),
        inner=splitter(scored.inner_folds, shuffle=True, random_state=seed),
        labels=y if classification else None,
        select="accuracy" if classification else "r2",
    )
    head = LinearHead(
        target=name,
        task=scored.task,
        features=list(feature_names),
        mean=fit.mean,
        scale=fit.scale,
        weight=fit.weight,
        bias=fit.bias,
        classes=[str(c) for c in classes],
        metadata={"metrics": scored.metrics, "seed": seed, "n_subjects": len(y), "best_params": {"alpha": fit.alpha}},
    )
    return ProbeResult(target=name, task=scored.task, predictions=scored.predictions, metrics=scored.metrics, head=head)


def _one_vs_rest(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """-1/+1 indicator columns (N, K) of ``labels`` among ``classes``, as ``RidgeClassifier`` fits them."""
    return np.where(labels[:, None] == classes[None, :], 1.0, -1.0)


def _softmax(decision: np.ndarray) -> np.ndarray:
    """Rows of decision values (N, K) -> scores summing to one (for the AUC, which needs only their order)."""
    shifted = np.exp(decision - decision.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _pearson(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(pearson_columns(truth, predicted[:, None])[0])


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(truth == predicted))


def _metrics(task: str, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, roc_auc_score

    if task == "regression":
        return {
            "task": task,
            "n": int(len(y)),
            "mse": float(mean_squared_error(y, pred)),
            "pearson_r": float(stats.pearsonr(y, pred)[0]),
            "spearman_rho": float(stats.spearmanr(y, pred)[0]),
            "mse_of_mean": float(np.var(y)),
        }
    if proba is None:
        raise ValueError("classification metrics need the out-of-fold class probabilities")
    classes = np.unique(y)
    if len(classes) == 2:
        auc = roc_auc_score(y == classes[1], proba[:, 1])
    else:
        auc = roc_auc_score(np.searchsorted(classes, y), proba, multi_class="ovr")
    counts = np.unique(y, return_counts=True)[1]
    return {
        "task": task,
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, average="macro")),
        "auc": float(auc),
        "chance_accuracy": float(counts.max() / counts.sum()),
    }
