"""Pretraining data in memory: windows, connectomes and the subject of each window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrainingSet:
    """Pretraining data in memory.

    Attributes
    ----------
    fmri : ndarray, shape (N, R, T), float32, or None
        Robust-scaled windows (n/a regions set to 0).
    sc : ndarray, shape (S, R, R), float32, or None
        Signed connectome of each subject.
    subject : ndarray of int, shape (N,)
        Subject (row of ``sc``) of each window; the held-out split is by subject. For a structural-only
        set, N = S and ``subject`` is ``arange(S)``.
    """

    fmri: np.ndarray | None
    sc: np.ndarray | None
    subject: np.ndarray

    def __post_init__(self) -> None:
        self.subject = np.asarray(self.subject, dtype=np.int64)
        if self.fmri is None and self.sc is None:
            raise ValueError("a training set needs fMRI windows, connectomes or both")
        if self.fmri is not None and self.fmri.shape[0] != self.subject.shape[0]:
            raise ValueError(f"{self.fmri.shape[0]} windows but {self.subject.shape[0]} subject indices")
        if self.sc is not None and self.subject.size and self.subject.max() >= self.sc.shape[0]:
            raise ValueError(f"subject index {self.subject.max()} but only {self.sc.shape[0]} connectomes")

    def __len__(self) -> int:
        return int(self.subject.shape[0])
