"""fMRIPrep-style confounds of a demo BOLD run: simulated head motion, and the table fMRIPrep would write.

:func:`simulate_motion` makes the six realignment parameters; :func:`confounds_table` computes every other
column from the BOLD data itself, with fMRIPrep's column names (``trans_x`` ... ``rot_z`` with their
``_derivative1``, ``_power2`` and ``_derivative1_power2`` variants, ``global_signal``, ``csf``,
``white_matter`` (same variants), ``framewise_displacement``, ``dvars``, ``std_dvars``, ``cosineXX``,
``c_comp_cor_XX``, ``w_comp_cor_XX``, ``a_comp_cor_XX``, ``t_comp_cor_XX``,
``non_steady_state_outlierXX``) and the JSON metadata that nilearn's ``load_confounds`` reads.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from pipelines.docstrings import fill_doc

MOTION_COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
#: Radius of the sphere that turns rotations into displacements for framewise displacement (Power 2012).
HEAD_RADIUS_MM = 50.0
#: High-pass cut-off of the cosine regressors, in seconds (fMRIPrep's default).
HIGH_PASS_PERIOD_S = 128.0
#: CompCor keeps components up to this cumulative variance, at most ``MAX_COMPCOR`` per mask.
COMPCOR_VARIANCE = 0.5
MAX_COMPCOR = 10


def simulate_motion(
    n_frames: int, t_r: float, rng: np.random.Generator, *, severity: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Realignment parameters of a participant: slow drift plus a few sudden movements.

    Parameters
    ----------
    n_frames : int
        Number of volumes.
    t_r : float
        Repetition time, in seconds.
    rng : numpy.random.Generator
        Source of the motion.
    severity : float
        Scales drift, number and size of the sudden movements (0: still).

    Returns
    -------
    motion : ndarray, shape (n_frames, 6)
        ``trans_x, trans_y, trans_z`` in mm and ``rot_x, rot_y, rot_z`` in radians.
    jerks : ndarray of int, shape (n_jerks,)
        Frames at which a sudden movement happens.
    """
    scale = np.array([1.0, 1.0, 1.0, 0.017, 0.017, 0.017])  # 1 mm ~ 1 degree
    drift = gaussian_filter1d(rng.standard_normal((n_frames, 6)).cumsum(axis=0), sigma=20.0 / t_r, axis=0)
    drift *= 0.05 * severity * scale
    n_jerks = rng.poisson(severity * n_frames * t_r / 60.0)
    jerks = np.sort(rng.choice(np.arange(1, n_frames), size=min(n_jerks, n_frames - 1), replace=False))
    steps = np.zeros((n_frames, 6))
    for frame in jerks:
        size = rng.normal(0.0, 0.4 * severity, 6) * scale
        steps[frame:] += size  # a shift that stays
        steps[frame] += rng.normal(0.0, 0.3 * severity, 6) * scale  # and a transient
    return drift + steps, jerks


def framewise_displacement(motion: np.ndarray) -> np.ndarray:
    """Power's framewise displacement: sum of absolute frame-to-frame changes, rotations on a 50 mm sphere.

    Parameters
    ----------
    motion : ndarray, shape (n_frames, 6)
        Translations in mm, rotations in radians.

    Returns
    -------
    ndarray, shape (n_frames,)
        mm; NaN for the first frame.
    """
    delta = np.abs(np.diff(motion, axis=0))
    fd = delta[:, :3].sum(axis=1) + HEAD_RADIUS_MM * delta[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def cosine_basis(n_frames: int, t_r: float, *, period_s: float = HIGH_PASS_PERIOD_S) -> np.ndarray:
    """Discrete cosine regressors of a high-pass filter (as fMRIPrep's ``cosineXX`` columns).

    Parameters
    ----------
    n_frames : int
        Number of volumes.
    t_r : float
        Repetition time, in seconds.
    period_s : float
        Longest period kept in the data, in seconds.

    Returns
    -------
    ndarray, shape (n_frames, K)
        ``sqrt(2 / n) cos(pi k (t + 1/2) / n)`` for ``k = 1 .. K``, ``K = floor(2 n t_r / period_s) - 1``.
    """
    order = max(int(math.floor(2 * n_frames * t_r / period_s)) - 1, 0)
    frames = np.arange(n_frames)[:, None] + 0.5
    k = np.arange(1, order + 1)[None, :]
    return np.sqrt(2.0 / n_frames) * np.cos(np.pi * k * frames / n_frames)


def _with_variants(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    derivative = np.concatenate([[np.nan], np.diff(values)])
    return {
        name: values,
        f"{name}_derivative1": derivative,
        f"{name}_power2": values**2,
        f"{name}_derivative1_power2": derivative**2,
    }


def _compcor(series: np.ndarray, basis: np.ndarray, n_dummy: int) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of high-pass filtered, standardised voxel series (steady-state frames only).

    Returns components of shape (n_frames, K) (zeros in dummy frames) and singular values (K,).
    """
    steady = series[n_dummy:].astype(float)  # (T', V)
    design = np.column_stack([np.ones(len(steady)), basis[n_dummy:]])
    residual = steady - design @ np.linalg.lstsq(design, steady, rcond=None)[0]
    sd = residual.std(axis=0)
    residual = residual[:, sd > 0] / sd[sd > 0]
    u, s, _ = np.linalg.svd(residual, full_matrices=False)
    explained = np.cumsum(s**2) / np.sum(s**2)
    keep = min(int(np.searchsorted(explained, COMPCOR_VARIANCE)) + 1, MAX_COMPCOR)
    components = np.zeros((len(series), keep))
    components[n_dummy:] = u[:, :keep]
    return components, s


@fill_doc
def confounds_table(
    bold: np.ndarray,
    motion: np.ndarray,
    *,
    t_r: float,
    brain: np.ndarray,
    wm: np.ndarray,
    csf: np.ndarray,
    n_dummy: int,
) -> tuple[pd.DataFrame, dict]:
    """The fMRIPrep confounds table of a BOLD run and its JSON metadata.

    Parameters
    ----------
    bold : ndarray, shape (X, Y, Z, n_frames)
        The preprocessed BOLD series.
    motion : ndarray, shape (n_frames, 6)
        Realignment parameters (mm, radians).
    %(t_r)s
    brain, wm, csf : ndarray of bool, shape (X, Y, Z)
        Brain mask and eroded white-matter and CSF masks.
    n_dummy : int
        Non-steady-state volumes at the start.

    Returns
    -------
    table : DataFrame
        One row per frame (NaN where fMRIPrep writes ``n/a``).
    metadata : dict
        Per-column metadata of the CompCor and cosine columns.
    """
    n_frames = bold.shape[-1]
    brain_ts, wm_ts, csf_ts = (bold[mask].T for mask in (brain, wm, csf))  # (T, V)
    columns: dict[str, np.ndarray] = {}
    for name, values in (
        ("global_signal", brain_ts.mean(axis=1)),
        ("csf", csf_ts.mean(axis=1)),
        ("white_matter", wm_ts.mean(axis=1)),
    ):
        columns.update(_with_variants(name, values))
    for k, name in enumerate(MOTION_COLUMNS):
        columns.update(_with_variants(name, motion[:, k]))
    columns["framewise_displacement"] = framewise_displacement(motion)
    difference = np.diff(brain_ts, axis=0)
    dvars = np.sqrt((difference**2).mean(axis=1))
    quartiles = np.percentile(brain_ts[n_dummy:], [25, 75], axis=0)
    robust_sd = (quartiles[1] - quartiles[0]) / 1.349
    expected = np.sqrt(2.0 * np.mean(robust_sd**2))
    columns["dvars"] = np.concatenate([[np.nan], dvars])
    columns["std_dvars"] = np.concatenate([[np.nan], dvars / expected])
    basis = cosine_basis(n_frames, t_r)
    metadata: dict[str, dict] = {}
    for k in range(basis.shape[1]):
        columns[f"cosine{k:02d}"] = basis[:, k]
        metadata[f"cosine{k:02d}"] = {"Method": "Discrete cosine basis", "CutoffPeriod": HIGH_PASS_PERIOD_S}
    top_variance = brain_ts[n_dummy:].var(axis=0) >= np.percentile(brain_ts[n_dummy:].var(axis=0), 98)
    for prefix, series, mask_name, method in (
        ("c", csf_ts, "CSF", "aCompCor"),
        ("w", wm_ts, "WM", "aCompCor"),
        ("a", np.concatenate([csf_ts, wm_ts], axis=1), "combined", "aCompCor"),
        ("t", brain_ts[:, top_variance], None, "tCompCor"),
    ):
        components, singular = _compcor(series, basis, n_dummy)
        explained = singular**2 / np.sum(singular**2)
        for k in range(components.shape[1]):
            name = f"{prefix}_comp_cor_{k:02d}"
            columns[name] = components[:, k]
            entry = {
                "Method": method,
                "Retained": True,
                "SingularValue": float(singular[k]),
                "VarianceExplained": float(explained[k]),
                "CumulativeVarianceExplained": float(explained[: k + 1].sum()),
            }
            if mask_name:
                entry["Mask"] = mask_name
            metadata[name] = entry
    for k in range(n_dummy):
        outlier = np.zeros(n_frames)
        outlier[k] = 1.0
        columns[f"non_steady_state_outlier{k:02d}"] = outlier
    return pd.DataFrame(columns), metadata
