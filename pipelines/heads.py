"""Linear prediction heads on subject features: fit, save as a bundle, load, apply.

A head bundle is a folder with ``head.json`` (target, task, feature names, classes, the embedding it reads,
provenance) and ``head.safetensors`` (``mean``, ``scale``, ``weight`` (K, F), ``bias`` (K,)). Predictions are
``weight @ ((x - mean) / scale) + bias``; for classification the K scores go through a softmax (K = number of
classes; a binary head stores both rows). Written by the group probes and ``bsym finetune``; read by
``bsym-app ... participant --head BUNDLE``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.atomic import atomic_folder
from pipelines.errors import InputDataError

HEAD_FORMAT = "bsym-head/1"


@dataclass
class LinearHead:
    """A standardised linear head.

    Attributes
    ----------
    target : str
        What it predicts (a ``participants.tsv`` column).
    task : {"regression", "classification"}
    features : list of str
        Names of the F input features, in order (e.g. ``fused_000`` ... ``fused_127``).
    mean, scale : ndarray, shape (F,)
        Standardisation of the features.
    weight : ndarray, shape (K, F)
    bias : ndarray, shape (K,)
    classes : list of str
        Class labels (classification), in row order of ``weight``.
    metadata : dict
        Provenance (training data, metrics, seed).
    """

    target: str
    task: Literal["regression", "classification"]
    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    classes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict from features ``x`` of shape (N, F): values (N,) or class labels (N,)."""
        scores = self.scores(x)
        if self.task == "regression":
            return scores[:, 0]
        return np.asarray(self.classes, dtype=object)[scores.argmax(axis=1)]

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (N, K); class probabilities (softmax) for classification."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise InputDataError(f"head '{self.target}' expects {len(self.features)} features, got shape {x.shape}")
        z = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        if self.task == "classification":
            z = np.exp(z - z.max(axis=1, keepdims=True))
            z /= z.sum(axis=1, keepdims=True)
        return z


def save_head(head: LinearHead, path: str | Path) -> Path:
    """Write ``head`` as a bundle folder at ``path`` (atomically: built aside, then renamed)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(getattr(head, k), dtype=np.float64) for k in ("mean", "scale", "weight", "bias")}
    with atomic_folder(path) as tmp:
        save_file(arrays, tmp / "head.safetensors")
        digest = hashlib.sha256((tmp / "head.safetensors").read_bytes()).hexdigest()
        info = {
            "format": HEAD_FORMAT,
            "target": head.target,
            "task": head.task,
            "features": head.features,
            "classes": head.classes,
            "metadata": head.metadata,
            "sha256": digest,
        }
        (tmp / "head.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return Path(path)


def load_head(path: str | Path) -> LinearHead:
    """Read a head bundle; refuse a wrong format or a weights file whose sha256 does not match."""
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        info = json.loads((path / "head.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(
            f"{path}: not a head bundle ({exc}); create one with a group probe (--target) or `bsym finetune`."
        ) from None
    if info.get("format") != HEAD_FORMAT:
        raise InputDataError(f"{path}/head.json: format {info.get('format')!r}, expected {HEAD_FORMAT!r}.")
    weights = path / "head.safetensors"
    if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
        raise InputDataError(
            f"{weights}: sha256 does not match head.json; the file was modified or is incomplete. Recreate the head."
        )
    arrays = load_file(weights)
    return LinearHead(
        target=info["target"],
        task=info["task"],
        features=list(info["features"]),
        classes=[str(c) for c in info.get("classes", [])],
        metadata=info.get("metadata", {}),
        **{k: arrays[k] for k in ("mean", "scale", "weight", "bias")},
    )
