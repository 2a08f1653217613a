"""A participant's model inputs: the windows of its fMRI runs, its signed connectome, and their cache file.

The model stage caches what it embedded in ``<work_dir>/sub-<s>/model/<label>_model_input.npz``; the group
level's study scaling and ``bsym pretrain``/``bsym finetune`` read these files back.

========== ================ ==========================================================================
key        shape / type     meaning
========== ================ ==========================================================================
windows    (W, R, T) f4     unscaled windows of every run, NaN rows for n/a parcels; W may be 0
sc         (R, R) f4        signed connectome; (0, 0) when the participant has none
labels     (R,) i4          atlas indices, in region order
t_r        () f8            TR of the windows, in s (NaN when unknown)
========== ================ ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path

#: Glob of the cached model inputs inside a work directory.
WORK_DIR_GLOB = "sub-*/model/*_model_input.npz"


@dataclass
class ModelInputs:
    """What the network embeds for one participant.

    Attributes
    ----------
    windows : ndarray, shape (W, R, T), float32, or None
        Unscaled windows of all runs; NaN rows for n/a parcels.
    sc : ndarray, shape (R, R), float32, or None
        Signed structural connectome.
    labels : ndarray of int, shape (R,)
        Atlas indices, in region order.
    t_r : float or None
        TR of the windows, in s.
    """

    windows: np.ndarray | None
    sc: np.ndarray | None
    labels: np.ndarray
    t_r: float | None = None


def cache_path(work_dir: str | Path, subject: str, label: str) -> Path:
    """``<work_dir>/sub-<subject>/model/<label>_model_input.npz``; ``label`` is ``sub-X`` or ``sub-X_ses-Y``."""
    return Path(work_dir) / f"sub-{subject}" / "model" / f"{label}_model_input.npz"


def read_relmat(path: str | Path) -> np.ndarray:
    """An XCP-D style relmat TSV (``Node`` column + one column per parcel) as an (R, R) array (n/a -> NaN)."""
    table = pd.read_csv(path, sep="\t", na_values="n/a", index_col=0)
    return table.to_numpy(dtype=np.float64)


def save_model_inputs(
    path: str | Path,
    *,
    windows: np.ndarray | None,
    sc: np.ndarray | None,
    labels: list[int] | np.ndarray,
    t_r: float | None,
) -> Path:
    """Cache a participant's model inputs (the layout of the module docstring), atomically."""
    n_regions = len(labels)
    arrays: dict[str, np.ndarray | np.generic] = {
        "windows": np.zeros((0, n_regions, 0), np.float32) if windows is None else windows.astype(np.float32),
        "sc": np.zeros((0, 0), np.float32) if sc is None else sc.astype(np.float32),
        "labels": np.asarray(labels, np.int32),
        "t_r": np.float64(t_r or np.nan),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, allow_pickle=True, **arrays)
    return Path(path)


def load_model_inputs(path: str | Path) -> ModelInputs:
    """Read a cache file written by :func:`save_model_inputs`; empty arrays come back as None."""
    with np.load(path) as data:
        windows, sc, labels, t_r = data["windows"], data["sc"], data["labels"], float(data["t_r"])
    has_windows = windows.ndim == 3 and windows.shape[0] > 0 and windows.shape[2] > 0
    return ModelInputs(
        windows=windows if has_windows else None,
        sc=sc if sc.size else None,
        labels=labels.astype(np.int64),
        t_r=None if np.isnan(t_r) else t_r,
    )


def participant_inputs(
    window_files: list[Path], relmat: Path | None, labels: list[int], t_r: float | None
) -> tuple[ModelInputs, list[tuple[int, int, float]]]:
    """Gather a participant's model inputs from its runs' window files and its signed relmat.

    Parameters
    ----------
    window_files : list of Path
        Each fMRI run's model-input ``.npz`` (``pipelines.fmri.model_input``).
    relmat : Path or None
        The signed connectome TSV; n/a edges become 0.
    labels : list of int
        Atlas indices, in region order.
    t_r : float or None
        The model's TR, in s.

    Returns
    -------
    inputs : ModelInputs
        Windows of every run that has one (None if none has), the connectome (None without ``relmat``).
    short_runs : list of (int, int, float)
        Runs shorter than one window: position in ``window_files``, frames at the model's TR, that TR.
    """
    from pipelines.fmri.model_input import load_model_input

    runs = [load_model_input(path) for path in window_files]
    kept = [run["windows"] for run in runs if run["windows"].shape[0]]
    short_runs = [(i, run["n_frames"], run["t_r"]) for i, run in enumerate(runs) if not run["windows"].shape[0]]
    sc = None if relmat is None else np.nan_to_num(read_relmat(relmat))
    return ModelInputs(
        windows=np.concatenate(kept) if kept else None, sc=sc, labels=np.asarray(labels), t_r=t_r
    ), short_runs
