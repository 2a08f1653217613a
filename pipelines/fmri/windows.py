"""Windows of T frames cut from a parcel series: the model's input unit.

See docs/architecture.md, "Windows and the model's TR".

Windows start at frame 0 and every ``stride`` frames after it (default ``stride = length``: non-overlapping);
only whole windows are kept, so the last ``(T - length) % stride`` frames are not used. A series shorter than
one window gives W = 0 windows; the model stage skips such a run with a message.
"""

from __future__ import annotations

import numpy as np


def n_windows(n_frames: int, length: int, stride: int | None = None) -> int:
    """Number of whole windows of ``length`` frames every ``stride`` frames in ``n_frames`` frames."""
    stride = length if stride is None else stride
    if length <= 0 or stride <= 0:
        raise ValueError(f"window length and stride must be positive, got length={length}, stride={stride}")
    return 0 if n_frames < length else 1 + (n_frames - length) // stride


def cut_windows(series: np.ndarray, length: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into windows.

    Parameters
    ----------
    series : ndarray, shape (T, R)
        Regularly sampled parcel series.
    length : int
        Frames per window (the model's T).
    stride : int, optional
        Frames between window starts; None means ``length``.

    Returns
    -------
    windows : ndarray, shape (W, R, length), float32
        ``windows[w] = series[starts[w]:starts[w] + length].T``.
    starts : ndarray of int, shape (W,)
        First frame of each window.
    """
    count = n_windows(series.shape[0], length, stride)
    stride = length if stride is None else stride
    starts = np.arange(count, dtype=int) * stride
    windows = np.empty((count, series.shape[1], length), dtype=np.float32)
    for w, start in enumerate(starts):
        windows[w] = series[start : start + length].T  # (length, R) -> (R, length)
    return windows, starts
