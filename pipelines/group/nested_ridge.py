"""Nested cross-validated ridge regression for many targets at once (kernel form).

The same estimator as scikit-learn's ``GridSearchCV(make_pipeline(StandardScaler(), Ridge()))`` (or
``RidgeClassifier``, scored by accuracy) inside outer folds: in every split the features are standardised with
the training rows' statistics, the regularisation strength is chosen by the inner folds' mean score (the first
of equal scores), and the outer test rows are predicted. On standardised training rows X (n x F) ridge with
an intercept predicts ``K_test (K + alpha I)^-1 (y - mean y) + mean y`` with ``K = X X'``, so one
eigendecomposition of each split's n x n kernel serves every alpha and every target column: a permutation test
of 1,000 shuffled targets costs about as much as one fit, even with 100,000 connectome edges as features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Smallest column spread used in standardising, as a share of the median column's spread (see _Split.build).
SPREAD_FLOOR = 0.01


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales (F,) of training rows (N, F): population std, constant columns scaled by 1.

    A column whose spread is below :data:`SPREAD_FLOOR` of the median column's is divided by that floor
    instead: StandardScaler would divide by a near-zero spread and turn rounding-level differences (an edge
    with one streamline in every training participant) into test values of 1e6.
    """
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    constant = scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    varying = scale[~constant]
    floor = SPREAD_FLOOR * float(np.median(varying)) if varying.size else 0.0
    return mean, np.where(constant, 1.0, np.maximum(scale, floor))


@dataclass
class _Split:
    """One split's kernel eigenvectors and test kernel: predict(Y) for every alpha."""

    train: np.ndarray  # (n_train,) row indices
    test: np.ndarray  # (n_test,)
    eigenvalues: np.ndarray  # (n_train,)
    test_by_eigen: np.ndarray  # (n_test, n_train) K_test U
    eigenvectors: np.ndarray  # (n_train, n_train) U

    @classmethod
    def build(cls, features: np.ndarray, train: np.ndarray, test: np.ndarray) -> _Split:
        """Standardise with the training rows (:func:`standardisation`), then factor the training kernel."""
        mean, scale = standardisation(features[train])
        x_train = (features[train] - mean) / scale
        x_test = (features[test] - mean) / scale
        eigenvalues, eigenvectors = np.linalg.eigh(x_train @ x_train.T)
        return cls(
            train=train,
            test=test,
            eigenvalues=np.clip(eigenvalues, 0.0, None),
            test_by_eigen=(x_test @ x_train.T) @ eigenvectors,
            eigenvectors=eigenvectors,
        )

    def predict(self, targets: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """Test-row predictions, (n_alphas, n_test, P), from training targets ``targets[train]`` (n, P)."""
        y_train = targets[self.train]
        offset = y_train.mean(axis=0)
        projected = self.eigenvectors.T @ (y_train - offset)  # (n_train, P)
        shrink = 1.0 / (self.eigenvalues[None, :] + alphas[:, None])  # (n_alphas, n_train)
        return np.einsum("ij,aj,jp->aip", self.test_by_eigen, shrink, projected) + offset


class NestedRidge:
    """Out-of-fold ridge predictions with a nested choice of alpha, for many targets at once.

    Parameters
    ----------
    features : ndarray, shape (N, F)
    alphas : sequence of float
        The inner grid of regularisation strengths.
    outer, inner : scikit-learn splitters
        ``outer.split(features, labels)`` gives the scoring folds, ``inner.split(train rows, their labels)`` the
        folds that choose alpha. They are drawn once, from ``labels``: shuffled targets are scored on the
        same folds.
    labels : ndarray, shape (N,), optional
        Class labels for stratified splitters.
    """

    def __init__(self, features: np.ndarray, *, alphas: tuple[float, ...], outer, inner, labels=None) -> None:
        x = np.asarray(features, dtype=np.float64)
        self.n = len(x)
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.folds: list[tuple[_Split, list[_Split]]] = []
        strata = np.zeros(self.n) if labels is None else np.asarray(labels)
        for train, test in outer.split(x, strata):
            inner_splits = [
                _Split.build(x, train[fit], train[score]) for fit, score in inner.split(x[train], strata[train])
            ]
            self.folds.append((_Split.build(x, train, test), inner_splits))

    def predict(self, targets: np.ndarray, *, select: str = "r2") -> np.ndarray:
        """Out-of-fold predictions of every problem in ``targets``.

        Parameters
        ----------
        targets : ndarray, shape (N,), (N, P) or (N, P, K)
            P problems of K outputs each (a classification: K one-vs-rest columns of -1/+1).
        select : {"r2", "accuracy"}
            Inner score that chooses each problem's alpha: the mean R^2 over folds (``Ridge``), or the share of
            rows whose largest output is the true class (``RidgeClassifier``).

        Returns
        -------
        ndarray, same shape as ``targets``
        """
        y = np.asarray(targets, dtype=np.float64)
        matrix = y.reshape(self.n, -1)
        problems = matrix.shape[1] if y.ndim < 3 else y.shape[1]
        out = np.empty_like(matrix)
        columns = np.arange(matrix.shape[1])
        for outer, inner in self.folds:
            best = _best_alphas(inner, matrix, self.alphas, problems, select)
            out[outer.test] = outer.predict(matrix, self.alphas)[best, :, columns].T
        return out.reshape(y.shape)


def _best_alphas(
    splits: list[_Split], matrix: np.ndarray, alphas: np.ndarray, problems: int, select: str
) -> np.ndarray:
    """Index into ``alphas`` of each column of ``matrix`` (N, P*K): the best mean inner score of its problem."""
    outputs = matrix.shape[1] // problems
    score = np.zeros((len(alphas), problems))
    for split in splits:
        truth = matrix[split.test].reshape(len(split.test), problems, outputs)
        predicted = split.predict(matrix, alphas).reshape(len(alphas), *truth.shape)
        if select == "accuracy":
            score += (predicted.argmax(-1) == truth.argmax(-1)).mean(axis=1)
        else:
            residual = ((predicted - truth) ** 2).sum(axis=1)[..., 0]
            total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)[..., 0]
            score += 1.0 - residual / np.where(total > 0, total, np.inf)
    return np.repeat(np.argmax(score, axis=0), outputs)  # first of equal means, as GridSearchCV


@dataclass
class RidgeFit:
    """Ridge refit on all rows: ``weight @ ((x - mean) / scale) + bias`` gives the K outputs."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    weight: np.ndarray  # (K, F)
    bias: np.ndarray  # (K,)
    alpha: float


def fit_ridge(
    features: np.ndarray, targets: np.ndarray, *, alphas: tuple[float, ...], inner, labels=None, select: str = "r2"
) -> RidgeFit:
    """Choose alpha by the ``inner`` folds on all rows (as GridSearchCV's refit), then fit on all rows.

    Parameters
    ----------
    features : ndarray, shape (N, F)
    targets : ndarray, shape (N, K)
        One problem of K outputs (K one-vs-rest columns for a classification).
    alphas, inner, labels, select
        As :class:`NestedRidge` and :meth:`NestedRidge.predict`.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64).reshape(len(x), -1)
    grid = np.asarray(alphas, dtype=np.float64)
    strata = np.zeros(len(x)) if labels is None else np.asarray(labels)
    splits = [_Split.build(x, fit, score) for fit, score in inner.split(x, strata)]
    alpha = float(grid[_best_alphas(splits, y, grid, 1, select)[0]])
    mean, scale = standardisation(x)
    standard = (x - mean) / scale
    offset = y.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(standard @ standard.T)
    dual = eigenvectors @ ((eigenvectors.T @ (y - offset)) / (np.clip(eigenvalues, 0.0, None) + alpha)[:, None])
    return RidgeFit(mean=mean, scale=scale, weight=(standard.T @ dual).T, bias=offset, alpha=alpha)
