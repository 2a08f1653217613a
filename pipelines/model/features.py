"""The subject-level feature row: one column per embedding dimension, named ``<kind>_<i:03d>``.

Written by the model stage (``desc-bsym_features.tsv``), gathered by the group level, re-computed by
study scaling and read by heads fitted on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

#: Embedding kinds, in the order the feature row lists them.
FEATURE_KINDS = ("fused", "functional", "structural")
_FEATURE = re.compile(r"(fused|functional|structural)_(\d+)")


def feature_names(kind: str, width: int) -> list[str]:
    """``[<kind>_000, <kind>_001, ...]``, ``width`` names."""
    return [f"{kind}_{i:03d}" for i in range(width)]


def feature_values(vectors: dict[str, np.ndarray]) -> dict[str, float]:
    """Named feature values of each kind's subject vector (D,), in :data:`FEATURE_KINDS` order."""
    row: dict[str, float] = {}
    for kind in FEATURE_KINDS:
        if kind in vectors:
            vector = np.asarray(vectors[kind])
            row.update(zip(feature_names(kind, vector.size), map(float, vector), strict=True))
    return row


def embedding_columns(columns: Iterable[str], kind: str | None = None) -> list[str]:
    """The feature columns among ``columns`` (of one ``kind`` when given), in their order."""
    found = []
    for column in columns:
        match = _FEATURE.fullmatch(column)
        if match and (kind is None or match.group(1) == kind):
            found.append(column)
    return found
