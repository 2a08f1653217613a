"""Band-limited resampling of parcel series to the model's repetition time, and filling of censored frames.

:func:`resample_to_tr` uses polyphase resampling (:func:`scipy.signal.resample_poly`): the TR ratio
``t_r / target_t_r`` is written as a fraction ``up / down`` (denominator at most 1000, so the effective target TR
is within 1e-6 of the requested one), the series is upsampled by ``up``, low-pass filtered by a Kaiser-windowed
FIR whose cut-off is the lower of the two Nyquist frequencies (anti-aliasing when the target is coarser), and
downsampled by ``down``. The ends are padded by extending a fitted line (``padtype="line"``), so the first and
last frames are not pulled towards zero. Output frame k lies at ``k * target_t_r`` seconds after input frame 0.

Censored frames (scrubbing) are filled beforehand by :func:`fill_censored_frames` with linear interpolation
between the neighbouring kept frames, because resampling needs a regular grid; the workflow records which
output windows contain filled frames.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

#: Largest denominator of the TR ratio fraction (bounds the polyphase filter length).
MAX_RATIO_DENOMINATOR = 1000


def resample_to_tr(series: np.ndarray, t_r: float, target_t_r: float) -> np.ndarray:
    """Resample a regularly sampled series from ``t_r`` to ``target_t_r`` (band-limited).

    Parameters
    ----------
    series : ndarray, shape (T, R)
        Series sampled every ``t_r`` seconds; NaN columns stay NaN.
    t_r : float
        Input repetition time, in seconds.
    target_t_r : float
        Output repetition time, in seconds.

    Returns
    -------
    ndarray, shape (T_out, R), float64
        ``T_out = ceil(T * t_r / target_t_r)`` frames (exact ratio ``up / down``), frame k at
        ``k * target_t_r`` s. The input itself (as float64) when both TRs are equal.
    """
    series = np.asarray(series, dtype=np.float64)
    if t_r <= 0 or target_t_r <= 0:
        raise ValueError(f"repetition times must be positive, got t_r={t_r} and target_t_r={target_t_r}")
    ratio = Fraction(t_r / target_t_r).limit_denominator(MAX_RATIO_DENOMINATOR)
    if ratio == 1:
        return series.copy()
    up, down = ratio.numerator, ratio.denominator
    out = np.full((int(np.ceil(series.shape[0] * up / down)), series.shape[1]), np.nan)
    finite = np.isfinite(series).all(axis=0)
    if finite.any():
        out[:, finite] = resample_poly(series[:, finite], up, down, axis=0, padtype="line")
    return out


def fill_censored_frames(series: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put kept frames back on a regular grid, filling censored frames by linear interpolation.

    Parameters
    ----------
    series : ndarray, shape (T_kept, R)
        Values at the kept frames.
    frames : ndarray of int, shape (T_kept,)
        Increasing frame index of each row.

    Returns
    -------
    regular : ndarray, shape (frames[-1] - frames[0] + 1, R)
        Series on every frame from the first to the last kept frame.
    filled : ndarray of bool, shape (frames[-1] - frames[0] + 1,)
        True where a frame was interpolated.
    """
    frames = np.asarray(frames, dtype=int)
    grid = np.arange(frames[0], frames[-1] + 1)
    filled = ~np.isin(grid, frames)
    if not filled.any():
        return np.asarray(series, dtype=np.float64).copy(), filled
    regular = np.empty((grid.size, series.shape[1]))
    for column in range(series.shape[1]):
        regular[:, column] = np.interp(grid, frames, series[:, column])
    return regular, filled
