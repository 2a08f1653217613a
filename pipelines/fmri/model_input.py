"""The windowed model input of one run: cleaned series -> regular grid -> target TR -> windows (``.npz``).

The ``.npz`` written by :func:`save_model_input` is the contract with the model stage:

========== ================ ==========================================================================
key        shape / type     meaning
========== ================ ==========================================================================
windows    (W, R, T) f4     cleaned parcel series at the target TR, one window per row; NaN rows for n/a
                            parcels. W = 0 when the run is shorter than one window.
starts_s   (W,) f8          start of each window, in s after the first volume of the BOLD file
labels     (R,) i8          atlas indices of the rows
t_r        () f8            the target TR, in s
n_frames   () i8            frames of the resampled series the windows were cut from
filled_fraction (W,) f8     fraction of each window's frames that come from censored (interpolated) input
========== ================ ==========================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.fmri.resample import fill_censored_frames, resample_to_tr
from pipelines.fmri.windows import cut_windows

#: Keys of the model-input ``.npz``.
MODEL_INPUT_KEYS = ("windows", "starts_s", "labels", "t_r", "n_frames", "filled_fraction")


class RunModelInput(TypedDict):
    """A model input ``.npz`` read back by :func:`load_model_input` (keys of the module docstring)."""

    windows: np.ndarray
    starts_s: np.ndarray
    labels: np.ndarray
    t_r: float
    n_frames: int
    filled_fraction: np.ndarray


def prepare_model_input(
    series: np.ndarray,
    frames: np.ndarray,
    labels,
    *,
    t_r: float,
    target_t_r: float,
    window_length: int,
    window_stride: int | None = None,
) -> dict[str, np.ndarray]:
    """Turn the cleaned kept frames of a run into model windows.

    Parameters
    ----------
    series : ndarray, shape (T_kept, R)
        Cleaned parcel series at the kept frames (NaN columns for n/a parcels).
    frames : ndarray of int, shape (T_kept,)
        Original frame index of each row (censored frames and dummy scans missing).
    labels : sequence of int, length R
        Atlas indices of the columns.
    t_r : float
        Repetition time of the run, in s.
    target_t_r : float
        The checkpoint's TR, in s.
    window_length : int
        Frames per window at the target TR (the model's T).
    window_stride : int, optional
        Frames between window starts; None means ``window_length``.

    Returns
    -------
    dict
        The arrays of :data:`MODEL_INPUT_KEYS` (see the module docstring).
    """
    regular, filled = fill_censored_frames(series, frames)  # (T_reg, R), (T_reg,)
    resampled = resample_to_tr(regular, t_r, target_t_r)  # (T_out, R)
    windows, starts = cut_windows(resampled, window_length, window_stride)  # (W, R, T), (W,)
    # a resampled frame counts as filled when its nearest input frame was interpolated
    nearest = np.clip(np.rint(np.arange(resampled.shape[0]) * target_t_r / t_r).astype(int), 0, filled.size - 1)
    filled_out = filled[nearest]
    filled_fraction = np.array([filled_out[s : s + window_length].mean() for s in starts], dtype=float)
    return {
        "windows": windows,
        "starts_s": frames[0] * t_r + starts * target_t_r,
        "labels": np.asarray(labels, dtype=np.int64),
        "t_r": np.float64(target_t_r),
        "n_frames": np.int64(resampled.shape[0]),
        "filled_fraction": filled_fraction,
    }


def save_model_input(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write the model input ``.npz`` through a temporary name (no half file after a crash)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, allow_pickle=True, **{key: arrays[key] for key in MODEL_INPUT_KEYS})
    return Path(path)


def load_model_input(path: str | Path) -> RunModelInput:
    """Read a model input ``.npz``; ``t_r`` and ``n_frames`` come back as Python scalars."""
    with np.load(path) as data:
        return {
            "windows": data["windows"],
            "starts_s": data["starts_s"],
            "labels": data["labels"],
            "t_r": float(data["t_r"]),
            "n_frames": int(data["n_frames"]),
            "filled_fraction": data["filled_fraction"],
        }
