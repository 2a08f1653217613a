"""Probes: does a subject embedding predict a participant's age, sex, diagnosis...?

Ridge regression for continuous targets and logistic regression for categorical ones, on standardised
features, with nested cross-validation (inner: the regularisation strength; outer: the score) and fixed seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from pipelines.errors import InputDataError
from pipelines.heads import LinearHead

MIN_SUBJECTS = 6
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
CS = (0.001, 0.01, 0.1, 1.0, 10.0)


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


def _estimator(task: str, seed: int, inner_folds: int):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    grid: dict[str, tuple[float, ...]]
    if task == "regression":
        model = make_pipeline(StandardScaler(), Ridge())
        grid = {"ridge__alpha": ALPHAS}
        cv = KFold(inner_folds, shuffle=True, random_state=seed)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        grid = {"logisticregression__C": CS}
        cv = StratifiedKFold(inner_folds, shuffle=True, random_state=seed)
    return GridSearchCV(model, grid, cv=cv)


def run_probe(
    features: np.ndarray,
    target: np.ndarray,
    *,
    name: str,
    feature_names: list[str],
    seed: int = 0,
    outer_folds: int = 5,
    inner_folds: int = 3,
) -> ProbeResult:
    """Nested cross-validated probe of ``target`` from ``features``.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        Subject features (rows with missing targets must be removed by the caller).
    target : ndarray, shape (N,)
        Continuous values or class labels.
    name : str
        Target name (recorded in the head).
    feature_names : list of str
        Names of the F columns.
    seed : int
        Seed of every fold split.
    outer_folds, inner_folds : int
        Folds of the outer (scoring) and inner (hyper-parameter) loops; reduced for small samples and classes.
        At least :data:`MIN_SUBJECTS` subjects are needed.

    Returns
    -------
    ProbeResult
        Metrics: ``mse``, ``pearson_r``, ``spearman_rho`` (regression) or ``accuracy``, ``f1``, ``auc``
        (classification), plus ``chance`` and the number of subjects.
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
        splitter = StratifiedKFold(outer_folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(outer_folds, shuffle=True, random_state=seed)
    oof = np.empty(len(y), dtype=y.dtype)
    proba = None
    for train, test in splitter.split(x, y):
        estimator = _estimator(task, seed, inner_folds).fit(x[train], y[train])
        oof[test] = estimator.predict(x[test])
        if task == "classification":
            classes = estimator.best_estimator_.classes_
            if proba is None:
                proba = np.zeros((len(y), len(np.unique(y))))
            all_classes = np.unique(y)
            proba[np.ix_(test, np.searchsorted(all_classes, classes))] = estimator.predict_proba(x[test])
    metrics = _metrics(task, y, oof, proba)
    final = _estimator(task, seed, inner_folds).fit(x, y)
    head = _to_head(
        final.best_estimator_,
        task,
        name,
        feature_names,
        {"metrics": metrics, "seed": seed, "n_subjects": len(y), "best_params": final.best_params_},
    )
    return ProbeResult(target=name, task=task, predictions=oof, metrics=metrics, head=head)


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


def _to_head(
    pipeline, task: Literal["regression", "classification"], name: str, feature_names: list[str], metadata: dict
) -> LinearHead:
    scaler, model = pipeline[0], pipeline[-1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    if task == "regression":
        weight, bias, classes = model.coef_[None, :], np.atleast_1d(model.intercept_), []
    else:
        weight, bias = model.coef_, model.intercept_
        classes = [str(c) for c in model.classes_]
        if len(classes) == 2:  # sklearn keeps one row for two classes; softmax over [-z/2, z/2] is the same
            weight = np.vstack([-weight[0] / 2, weight[0] / 2])
            bias = np.array([-bias[0] / 2, bias[0] / 2])
    return LinearHead(
        target=name,
        task=task,
        features=list(feature_names),
        mean=scaler.mean_,
        scale=scale,
        weight=np.asarray(weight, float),
        bias=np.asarray(bias, float),
        classes=classes,
        metadata=metadata,
    )
