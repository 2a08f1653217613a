"""Robust scaling of parcel series: (x - median) / IQR per region (docs/model.md, "Inputs and scaling")."""

from __future__ import annotations

import warnings

import numpy as np


def robust_statistics(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region median and interquartile range over windows and time.

    Parameters
    ----------
    windows : ndarray, shape (W, R, T)
        Unscaled series; NaN rows (n/a parcels) are ignored.

    Returns
    -------
    median, iqr : ndarray, shape (R,)
        NaN for a region that is n/a everywhere.
    """
    values = np.moveaxis(np.asarray(windows, dtype=np.float64), 1, 0).reshape(windows.shape[1], -1)
    with warnings.catch_warnings():  # all-NaN regions give NaN, which is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, median, q75 = np.nanpercentile(values, [25, 50, 75], axis=1)
    return median, q75 - q25


def scale_windows(windows: np.ndarray, median: np.ndarray, iqr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale windows with per-region statistics; n/a regions become 0 and are reported.

    Parameters
    ----------
    windows : ndarray, shape (W, R, T)
    median, iqr : ndarray, shape (R,)
        A zero or non-finite IQR scales by 1 (a flat region stays flat).

    Returns
    -------
    scaled : ndarray, shape (W, R, T), float32
    available : ndarray of bool, shape (W, R)
        False where the region was n/a (NaN) in that window.
    """
    windows = np.asarray(windows, dtype=np.float64)
    iqr = np.where(np.isfinite(iqr) & (iqr > 0), iqr, 1.0)
    median = np.where(np.isfinite(median), median, 0.0)
    available = np.isfinite(windows).all(axis=2)
    scaled = (windows - median[None, :, None]) / iqr[None, :, None]
    scaled[~np.isfinite(scaled)] = 0.0
    return scaled.astype(np.float32), available


#: The choices of ``--scaling``: whose statistics scale a participant's windows.
SCALINGS = ("subject", "checkpoint", "study")


def select_statistics(
    windows: np.ndarray,
    scaling: str,
    *,
    checkpoint: tuple[np.ndarray, np.ndarray] | None = None,
    study: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """The (median, IQR) that scale ``windows``, and the scaling actually used.

    Parameters
    ----------
    windows : ndarray, shape (W, R, T)
        One participant's unscaled windows.
    scaling : {"subject", "checkpoint", "study"}
        ``subject``: the participant's own statistics. ``checkpoint``: the weight bundle's. ``study``: statistics
        over every participant of the study; without them (one participant at the participant level) the
        participant's own are used and the scaling used is ``subject``.
    checkpoint, study : tuple of ndarray, shape (R,), optional
        (median, IQR) of the bundle and of the study.

    Returns
    -------
    median, iqr : ndarray, shape (R,)
    used : str
        The scaling the statistics belong to, as sidecars record it.
    """
    used = scaling_used(scaling, has_study=study is not None)
    if used == "checkpoint":
        if checkpoint is None:
            raise ValueError("scaling 'checkpoint' needs the bundle's statistics")
        return checkpoint[0], checkpoint[1], used
    if used == "study":
        assert study is not None
        return study[0], study[1], used
    median, iqr = robust_statistics(windows)
    return median, iqr, used


def scaling_used(scaling: str, *, has_study: bool) -> str:
    """The scaling that ``--scaling`` amounts to: ``study`` without study statistics is ``subject``."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; expected one of {SCALINGS}")
    return "subject" if scaling == "study" and not has_study else scaling
