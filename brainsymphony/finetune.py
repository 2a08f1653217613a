"""Supervised fine-tuning: a linear head on the subject embedding, trained together with the encoder.

The subject embedding is what the app writes as its feature row: the mean over regions (and windows) of one
stream's region embeddings (``fused``, ``functional`` or ``structural``), D values. The head is
``weight @ ((x - mean) / scale) + bias`` with ``mean``/``scale`` the training subjects' feature statistics of the
starting encoder, so it can be stored in the app's head format (``pipelines.heads``) with the fine-tuned encoder.

Splits are nested and by subject: an outer test set scores the result (never used for any choice) and an inner
validation set picks the epoch; the encoder and head of the best validation epoch are returned.
For a frozen encoder (linear probe) use :func:`subject_embeddings` and a probe with nested cross-validation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from brainsymphony.errors import ConfigError
from brainsymphony.inference import window_means
from brainsymphony.model import BrainSymphony
from brainsymphony.pretraining import TrainingSet

Embedding = Literal["fused", "functional", "structural"]
Task = Literal["regression", "classification"]


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Settings of :func:`finetune`.

    Attributes
    ----------
    task : {"regression", "classification"}
    embedding : {"fused", "functional", "structural"}
        Stream whose region embeddings are averaged into the subject vector.
    epochs : int
    learning_rate : float
        AdamW rate of the encoder (cosine decay, no warm-up).
    head_learning_rate : float
        AdamW rate of the head.
    weight_decay : float
    batch_size : int
        Windows per step.
    test_fraction, validation_fraction : float
        Fractions of subjects in the outer test set and, of the rest, in the inner validation set.
    clip_norm : float
        Maximum gradient norm (0: none).
    seed : int
    """

    task: Task
    embedding: Embedding = "fused"
    epochs: int = 10
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-2
    weight_decay: float = 0.01
    batch_size: int = 4
    test_fraction: float = 0.2
    validation_fraction: float = 0.2
    clip_norm: float = 1.0
    seed: int = 0


@dataclass
class FinetuneResult:
    """A fine-tuned encoder and its head.

    Attributes
    ----------
    model : BrainSymphony
        The encoder at the best validation epoch (eval mode, CPU).
    mean, scale : ndarray, shape (D,)
        Feature standardisation.
    weight : ndarray, shape (K, D)
    bias : ndarray, shape (K,)
        Head on standardised features; K = 1 (regression) or the number of classes.
    classes : list of str
        Class labels in row order (classification).
    metrics : dict
        Scores on the outer test subjects (:func:`prediction_metrics`).
    best_epoch : int
        1-based; 0 means the starting encoder with a head fitted only.
    history : list of dict
        Per epoch: training loss and validation score.
    split : dict of str to ndarray
        Subject indices of ``train``, ``validation`` and ``test``.
    """

    model: BrainSymphony
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    classes: list[str]
    metrics: dict[str, Any]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    split: dict[str, np.ndarray] = field(default_factory=dict)


def subject_embeddings(
    model: BrainSymphony,
    data: TrainingSet,
    *,
    embedding: Embedding = "fused",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Subject feature vectors of a frozen encoder (the app's ``<embedding>_000..`` feature row).

    Computed by ``brainsymphony.inference.window_means``, the app's own inference path.

    Parameters
    ----------
    model : BrainSymphony
    data : TrainingSet
    embedding : {"fused", "functional", "structural"}
    batch_size : int
    device : str or torch.device

    Returns
    -------
    subjects : ndarray of int, shape (S',)
        Subjects present in ``data``, ascending.
    features : ndarray, shape (S', D), float64
        Mean over regions and windows of the chosen embedding.
    """
    _check_embedding(model, embedding)
    cfg = model.config
    if cfg.has_functional and data.fmri is None:
        raise ValueError(f"a {cfg.mode} model needs fMRI windows, but the data has none")
    if cfg.has_structural and data.sc is None:
        raise ValueError(f"a {cfg.mode} model needs connectomes, but the data has none")
    n_subjects = int(data.subject.max()) + 1 if len(data) else 0
    means = window_means(
        model,
        data.fmri if cfg.has_functional else None,
        data.sc if cfg.has_structural else None,
        data.subject,
        n_subjects=n_subjects,
        batch_size=batch_size,
        device=device,
    )
    subjects = np.flatnonzero(means.counts).astype(np.int64)
    return subjects, means.embeddings[embedding][subjects].mean(axis=1)


def finetune(
    model: BrainSymphony,
    data: TrainingSet,
    targets: np.ndarray,
    *,
    config: FinetuneConfig,
    device: str | torch.device = "cpu",
) -> FinetuneResult:
    """Train encoder and linear head on a subject-level target (full fine-tuning).

    Parameters
    ----------
    model : BrainSymphony
        Starting encoder (copied; the argument is not modified).
    data : TrainingSet
        Windows (and connectomes) with their subject indices.
    targets : ndarray, shape (S,)
        One value per subject index of ``data`` (float for regression, labels for classification); NaN or
        ``None`` marks a subject without a target (left out).
    config : FinetuneConfig
    device : str or torch.device

    Returns
    -------
    FinetuneResult
    """
    _check_embedding(model, config.embedding)
    torch.manual_seed(config.seed)
    targets = np.asarray(targets, dtype=object)
    known = np.array([t is not None and not (isinstance(t, float) and math.isnan(t)) for t in targets])
    subjects = np.unique(data.subject[known[data.subject]])
    split = _nested_split(subjects, config)
    classes: list[str] = []
    if config.task == "classification":
        labels = np.array([str(t) for t in targets], dtype=object)
        classes = sorted({labels[s] for s in subjects})
        if len(classes) < 2:
            raise ValueError(f"classification needs at least two classes; the targets have {classes}")
        y_all = np.array([classes.index(label) if label in classes else -1 for label in labels])
    else:
        y_all = np.array([float(t) if k else np.nan for t, k in zip(targets, known, strict=True)])
    encoder = copy.deepcopy(model).to(device)
    start_subjects, start_features = subject_embeddings(encoder, data, embedding=config.embedding, device=device)
    train_rows = np.isin(start_subjects, split["train"])
    mean = start_features[train_rows].mean(axis=0)
    scale = start_features[train_rows].std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    head = _Head(mean, scale, n_outputs=len(classes) if classes else 1).to(device)
    if not classes:  # standardised regression target: the head's output is mapped back in _export
        y_train = y_all[split["train"]]
        head.target_mean, head.target_scale = float(y_train.mean()), float(y_train.std() or 1.0)
    windows = np.flatnonzero(np.isin(data.subject, split["train"]))
    steps_per_epoch = math.ceil(windows.size / config.batch_size)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in encoder.parameters() if p.requires_grad], "lr": config.learning_rate},
            {"params": list(head.parameters()), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    base_rates = [config.learning_rate, config.head_learning_rate]
    total = config.epochs * steps_per_epoch
    best = _Best(score=-math.inf, epoch=0, encoder=None, head=None)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        encoder.train()
        order = np.random.default_rng([config.seed, epoch]).permutation(windows)
        losses = []
        for start in range(0, order.size, config.batch_size):
            index = order[start : start + config.batch_size]
            for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
                group["lr"] = rate * 0.5 * (1.0 + math.cos(math.pi * step / total))
            optimizer.zero_grad(set_to_none=True)
            output = head(_subject_vectors(encoder, data, index, config.embedding, device))
            loss = _loss(output, y_all[data.subject[index]], head, classes, device)
            loss.backward()
            if config.clip_norm:
                torch.nn.utils.clip_grad_norm_(list(encoder.parameters()) + list(head.parameters()), config.clip_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        score = _score(encoder, head, data, split["validation"], y_all, classes, config, device)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "validation_score": score})
        if score > best.score:
            best = _Best(
                score=score,
                epoch=epoch,
                encoder=copy.deepcopy(encoder.state_dict()),
                head=copy.deepcopy(head.state_dict()),
            )
    if best.encoder is not None and best.head is not None:
        encoder.load_state_dict(best.encoder)
        head.load_state_dict(best.head)
    encoder.eval()
    predictions, truth = _predict(encoder, head, data, split["test"], y_all, classes, config, device)
    metrics = prediction_metrics(config.task, truth, predictions, classes)
    weight, bias = head.export()
    return FinetuneResult(
        model=encoder.cpu().eval(),
        mean=mean,
        scale=scale,
        weight=weight,
        bias=bias,
        classes=classes,
        metrics=metrics,
        best_epoch=best.epoch,
        history=history,
        split=split,
    )


def prediction_metrics(
    task: Task, truth: np.ndarray, predictions: np.ndarray, classes: list[str] | None = None
) -> dict[str, Any]:
    """Scores as the group probes report them.

    Parameters
    ----------
    task : {"regression", "classification"}
    truth : ndarray, shape (N,)
        Values, or class indices for classification.
    predictions : ndarray, shape (N,) or (N, K)
        Predicted values, or class probabilities (N, K) for classification.
    classes : list of str, optional

    Returns
    -------
    dict
        Regression: ``mse``, ``pearson_r``, ``spearman_rho``, ``mse_of_mean`` (variance of the truth), ``n``.
        Classification: ``accuracy``, ``f1`` (macro), ``auc`` (one-vs-rest mean), ``chance_accuracy``, ``n``.
    """
    truth = np.asarray(truth)
    if task == "regression":
        y, p = truth.astype(float), np.asarray(predictions, float)
        return {
            "task": task,
            "n": int(y.size),
            "mse": float(np.mean((y - p) ** 2)),
            "pearson_r": _pearson(y, p),
            "spearman_rho": _pearson(_ranks(y), _ranks(p)),
            "mse_of_mean": float(np.var(y)),
        }
    proba = np.asarray(predictions, float)
    k = proba.shape[1]
    predicted = proba.argmax(axis=1)
    f1s, aucs = [], []
    for c in range(k):
        tp = np.sum((predicted == c) & (truth == c))
        denominator = np.sum(predicted == c) + np.sum(truth == c)
        f1s.append(2 * tp / denominator if denominator else 0.0)
        positive = truth == c
        if positive.any() and (~positive).any():
            ranks = _ranks(proba[:, c])
            aucs.append(
                (ranks[positive].sum() - positive.sum() * (positive.sum() + 1) / 2)
                / (positive.sum() * (~positive).sum())
            )
    counts = np.bincount(truth.astype(int), minlength=k)
    return {
        "task": task,
        "n": int(truth.size),
        "accuracy": float(np.mean(predicted == truth)),
        "f1": float(np.mean(f1s)),
        "auc": float(aucs[1] if k == 2 and len(aucs) == 2 else np.mean(aucs)),
        "chance_accuracy": float(counts.max() / counts.sum()),
        "classes": list(classes or []),
    }


class _Head(nn.Module):
    """Standardise then Linear(D -> K); regression outputs are in standardised target units."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: np.ndarray, scale: np.ndarray, *, n_outputs: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.linear = nn.Linear(mean.shape[0], n_outputs)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.target_mean, self.target_scale = 0.0, 1.0

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.linear((vectors.float() - self.mean) / self.scale)

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, D) weight and (K,) bias in target units, on standardised features."""
        weight = self.linear.weight.detach().double().cpu().numpy() * self.target_scale
        bias = self.linear.bias.detach().double().cpu().numpy() * self.target_scale + self.target_mean
        return weight, bias


@dataclass
class _Best:
    score: float
    epoch: int
    encoder: dict | None
    head: dict | None


def _check_embedding(model: BrainSymphony, embedding: str) -> None:
    available = {
        "functional": model.config.has_functional,
        "structural": model.config.has_structural,
        "fused": model.config.mode == "multimodal",
    }
    if not available.get(embedding, False):
        raise ConfigError(
            f"a {model.config.mode} model has no {embedding!r} embedding; choose one of "
            f"{[k for k, v in available.items() if v]}"
        )


def _subject_vectors(
    model: BrainSymphony, data: TrainingSet, index: np.ndarray, embedding: str, device: str | torch.device
) -> torch.Tensor:
    """Mean over regions of one embedding for windows ``index``: (B, D)."""
    fmri = sc = None
    if model.config.has_functional:
        if data.fmri is None:
            raise ValueError(f"a {model.config.mode} model needs fMRI windows, but the data has none")
        fmri = torch.as_tensor(data.fmri[index], dtype=torch.float32, device=device)
    if model.config.has_structural:
        if data.sc is None:
            raise ValueError(f"a {model.config.mode} model needs connectomes, but the data has none")
        sc = torch.as_tensor(data.sc[data.subject[index]], dtype=torch.float32, device=device)
    return getattr(model(fmri=fmri, sc=sc), embedding).mean(dim=1)


def _loss(output: torch.Tensor, y: np.ndarray, head: _Head, classes: list[str], device) -> torch.Tensor:
    if classes:
        return nn.functional.cross_entropy(output, torch.as_tensor(y, dtype=torch.long, device=device))
    target = (torch.as_tensor(y.astype(np.float64), device=device) - head.target_mean) / head.target_scale
    return nn.functional.mse_loss(output[:, 0], target.float())


def _predict(
    encoder: BrainSymphony,
    head: _Head,
    data: TrainingSet,
    subjects: np.ndarray,
    y_all: np.ndarray,
    classes: list[str],
    config: FinetuneConfig,
    device,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject predictions (values, or class probabilities (N, K)) and truth."""
    rows = np.flatnonzero(np.isin(data.subject, subjects))
    if rows.size == 0:
        return np.zeros((0, max(1, len(classes)))), np.zeros(0)
    subset = TrainingSet(fmri=None if data.fmri is None else data.fmri[rows], sc=data.sc, subject=data.subject[rows])
    ids, features = subject_embeddings(encoder, subset, embedding=config.embedding, device=device)
    with torch.no_grad():
        scores = head(torch.as_tensor(features, dtype=torch.float32, device=device)).double().cpu().numpy()
    if classes:
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True), y_all[ids]
    return scores[:, 0] * head.target_scale + head.target_mean, y_all[ids]


def _score(encoder, head, data, subjects, y_all, classes, config, device) -> float:
    """Validation score, higher is better: accuracy (ties broken by log-likelihood) or -MSE."""
    if subjects.size == 0:
        return 0.0
    predictions, truth = _predict(encoder, head, data, subjects, y_all, classes, config, device)
    if classes:
        likelihood = np.mean(np.log(predictions[np.arange(truth.size), truth.astype(int)] + 1e-12))
        return float(np.mean(predictions.argmax(axis=1) == truth) + 1e-3 * likelihood)
    return -float(np.mean((predictions - truth) ** 2))


def _nested_split(subjects: np.ndarray, config: FinetuneConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([config.seed, 7])
    order = rng.permutation(subjects)
    n_test = max(1, round(config.test_fraction * order.size))
    n_validation = max(1, round(config.validation_fraction * (order.size - n_test)))
    if order.size - n_test - n_validation < 2:
        raise ValueError(
            f"{order.size} subjects with a target are too few for a test, validation and training "
            "split; give more subjects or use the linear probe (frozen encoder)"
        )
    return {
        "test": np.sort(order[:n_test]),
        "validation": np.sort(order[n_test : n_test + n_validation]),
        "train": np.sort(order[n_test + n_validation :]),
    }


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank."""
    values = np.asarray(values, float)
    order = values.argsort(kind="mergesort")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(1, values.size + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    if unique.size < values.size:
        ranks = (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "prediction_metrics", "subject_embeddings"]
