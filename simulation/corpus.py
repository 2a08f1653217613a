"""The ``demo-sim`` pretraining corpus: simulated subjects on the demo atlas, no volumes involved."""

from __future__ import annotations

import numpy as np

from pipelines.dmri.connectome import signed_connectome
from pipelines.fmri.resample import resample_to_tr
from pipelines.model.corpus import Corpus
from simulation.atlas import ATLAS_LABEL, build_demo_atlas
from simulation.simulate import coupling_for_age, simulate_bold, simulate_connectome

#: TR choices (s) of the simulated acquisitions.
SIMULATED_TRS = (0.72, 0.8, 1.0, 1.5, 2.0)


def simulate_corpus(
    n_subjects: int, *, seed: int = 0, windows_per_subject: int = 1, n_timepoints: int = 200, target_tr: float = 0.72
) -> Corpus:
    """The ``demo-sim`` corpus: simulated subjects on the demo atlas (450 regions).

    Per subject (seeded by ``(seed, subject)``): age ~ U(20, 80) years sets the Hopf coupling
    (:func:`simulation.simulate.coupling_for_age`); a distance-rule connectome with density ~ U(0.10, 0.20),
    length constant ~ U(15, 25) mm and weight jitter ~ U(0.3, 0.5); BOLD at a TR drawn from
    :data:`SIMULATED_TRS` with dynamical noise ~ U(0.01, 0.04) and white measurement noise of U(0.1, 0.6) times
    each region's signal SD, resampled to ``target_tr`` (band-limited, as the app does) and cut into
    ``windows_per_subject`` windows of ``n_timepoints`` frames. Streamline counts are Poisson with mean
    ``total * w_ij / sum(w)`` (total ~ U(2e5, 1e6) streamlines); parcel volumes are the demo atlas's voxel counts
    (1 mm^3) times a per-subject head size factor ~ U(0.9, 1.1); the signed connectome is
    log10(count / ((V_i + V_j) / 2)) where count > 0, else 0 (docs/model.md, "Signed structural connectome").

    Parameters
    ----------
    n_subjects : int
    seed : int
    windows_per_subject : int
    n_timepoints : int
        T, frames per window at ``target_tr``.
    target_tr : float
        TR of the windows, in s.

    Returns
    -------
    Corpus
        ``covariates``: ``age``, ``acquisition_tr``, ``coupling``, ``measurement_noise``.
    """
    atlas = build_demo_atlas()
    indices = atlas.table["index"].to_numpy()
    volumes = np.bincount(atlas.labels.ravel().astype(np.int64), minlength=indices.max() + 1)[indices].astype(float)
    hemispheres = (atlas.hemispheres == "L").astype(int)
    n_regions, frames = len(indices), windows_per_subject * n_timepoints
    windows = np.empty((n_subjects * windows_per_subject, n_regions, n_timepoints), np.float32)
    sc = np.empty((n_subjects, n_regions, n_regions), np.float32)
    covariates = {k: np.empty(n_subjects) for k in ("age", "acquisition_tr", "coupling", "measurement_noise")}
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, s])
        age = rng.uniform(20.0, 80.0)
        weights = simulate_connectome(
            atlas.centroids,
            rng,
            decay_mm=rng.uniform(15.0, 25.0),
            density=rng.uniform(0.10, 0.20),
            jitter=rng.uniform(0.3, 0.5),
            hemispheres=hemispheres,
        )
        t_r = float(rng.choice(SIMULATED_TRS))
        n_acquired = int(np.ceil(frames * target_tr / t_r)) + 8
        bold = simulate_bold(
            weights,
            t_r=t_r,
            n_frames=n_acquired,
            coupling=coupling_for_age(age),
            rng=rng,
            noise=rng.uniform(0.01, 0.04),
        )  # (R, n_acquired)
        level = rng.uniform(0.1, 0.6)
        bold = bold + level * bold.std(axis=1, keepdims=True) * rng.standard_normal(bold.shape)
        series = resample_to_tr(bold.T.astype(np.float64), t_r, target_tr)[:frames]  # (frames, R)
        windows[s * windows_per_subject : (s + 1) * windows_per_subject] = series.T.reshape(
            n_regions, windows_per_subject, n_timepoints
        ).transpose(1, 0, 2)
        sc[s] = signed_connectome(
            streamline_counts(weights, rng.uniform(2e5, 1e6), rng), volumes * rng.uniform(0.9, 1.1)
        ).astype(np.float32)
        for key, value in (
            ("age", age),
            ("acquisition_tr", t_r),
            ("coupling", coupling_for_age(age)),
            ("measurement_noise", level),
        ):
            covariates[key][s] = value
    return Corpus(
        windows=windows,
        window_subject=np.repeat(np.arange(n_subjects), windows_per_subject),
        sc=sc,
        subject_ids=[f"sim{s:04d}" for s in range(n_subjects)],
        t_r=target_tr,
        labels=indices,
        covariates=covariates,
        atlas=ATLAS_LABEL,
        labels_sha256=atlas.labels_sha256,
    )


def streamline_counts(weights: np.ndarray, total: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson streamline counts with mean ``total * w_ij / sum_{i<j} w``, symmetric, zero diagonal.

    Parameters
    ----------
    weights : ndarray, shape (R, R)
        Symmetric non-negative connection weights.
    total : float
        Expected number of streamlines.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int, shape (R, R)
    """
    upper = np.triu(weights, 1)
    counts = np.triu(rng.poisson(total * upper / max(upper.sum(), 1e-12)), 1)
    return counts + counts.T
