"""Whole-brain simulation: a distance-rule connectome and Hopf-network BOLD signals on it.

These functions need no volumes, so pretraining can draw a corpus of hundreds of simulated subjects
cheaply (one subject of 450 regions x 300 frames takes a fraction of a second)::

    rng = np.random.default_rng(0)
    sc = simulate_connectome(centroids, rng)
    bold = simulate_bold(sc, t_r=0.72, n_frames=416, coupling=coupling_for_age(35.0), rng=rng)

Model. Each region is a Stuart-Landau (Hopf normal form) oscillator near its bifurcation,

    dz_i = [(a + i w_i) z_i - |z_i|^2 z_i + G sum_j C_ij (z_j - z_i)] dt + sigma dW_i,

integrated with Euler-Maruyama (complex z, real part = neural activity), with C the connectome scaled to a
mean node strength of 1. The real part is convolved with a canonical double-gamma haemodynamic response and
sampled every ``t_r`` seconds. Coupling ``G`` falls with age (:func:`coupling_for_age`), which lowers the
correlation between connected regions: the planted effect a probe can find.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve
from scipy.spatial.distance import cdist
from scipy.stats import gamma
from threadpoolctl import threadpool_limits

#: Coupling G at age 20 and its change per year (falls with age); see :func:`coupling_for_age`.
COUPLING_AT_20 = 0.9
COUPLING_PER_YEAR = -0.009


def coupling_for_age(age: float) -> float:
    """Global coupling ``G`` of the Hopf network for a participant of ``age`` years.

    Parameters
    ----------
    age : float
        Age in years.

    Returns
    -------
    float
        ``G = 0.9 - 0.009 * (age - 20)``, clipped to [0.05, 2]; e.g. 0.9 at 20 years, 0.36 at 80.
    """
    return float(np.clip(COUPLING_AT_20 + COUPLING_PER_YEAR * (age - 20.0), 0.05, 2.0))


def simulate_connectome(
    centroids: np.ndarray,
    rng: np.random.Generator,
    *,
    decay_mm: float = 20.0,
    density: float = 0.15,
    jitter: float = 0.4,
    hemispheres: np.ndarray | None = None,
    interhemispheric: float = 0.3,
    tract_pairs: np.ndarray | None = None,
    tract_weight: float = 1.0,
) -> np.ndarray:
    """A weighted, undirected structural connectome from the exponential distance rule.

    The weight of a pair falls as ``exp(-distance / decay_mm)`` times subject-specific log-normal noise;
    only the strongest ``density`` fraction of pairs is kept. Pairs between hemispheres are weakened by
    ``interhemispheric``. Planted tracts (``tract_pairs``) are set to ``tract_weight`` times the
    largest distance-rule weight, so they are among the strongest connections in every subject.

    Parameters
    ----------
    centroids : ndarray, shape (R, 3)
        Region centroids, in mm.
    rng : numpy.random.Generator
        Source of the subject-specific noise.
    decay_mm : float
        Length constant of the distance rule, in mm.
    density : float
        Fraction of region pairs kept, in (0, 1].
    jitter : float
        Standard deviation of the log-normal noise on each weight (0: deterministic).
    hemispheres : ndarray of int, shape (R,), optional
        Hemisphere code of each region (any two values); when given, pairs across hemispheres are scaled
        by ``interhemispheric``.
    interhemispheric : float
        Scale of pairs across hemispheres, in [0, 1].
    tract_pairs : ndarray of int, shape (P, 2), optional
        Zero-based region pairs joined by a planted tract.
    tract_weight : float
        Weight of a planted tract relative to the largest distance-rule weight.

    Returns
    -------
    ndarray, shape (R, R)
        Symmetric, non-negative, zero diagonal, largest weight 1.
    """
    centroids = np.asarray(centroids, dtype=float)
    n_regions = centroids.shape[0]
    distance = cdist(centroids, centroids)
    weights = np.exp(-distance / decay_mm)
    noise = rng.normal(0.0, jitter, size=(n_regions, n_regions))
    weights *= np.exp(np.triu(noise, 1) + np.triu(noise, 1).T)
    if hemispheres is not None:
        hemispheres = np.asarray(hemispheres)
        weights[hemispheres[:, None] != hemispheres[None, :]] *= interhemispheric
    np.fill_diagonal(weights, 0.0)
    upper = weights[np.triu_indices(n_regions, 1)]
    n_keep = max(1, round(density * upper.size))
    threshold = np.partition(upper, upper.size - n_keep)[upper.size - n_keep]
    weights[weights < threshold] = 0.0
    weights /= weights.max()
    if tract_pairs is not None and len(tract_pairs):
        pairs = np.asarray(tract_pairs, dtype=int)
        strength = tract_weight * np.exp(rng.normal(0.0, jitter / 4, size=len(pairs)))
        weights[pairs[:, 0], pairs[:, 1]] = strength
        weights[pairs[:, 1], pairs[:, 0]] = strength
        weights /= weights.max()
    return weights


def canonical_hrf(dt: float, *, duration: float = 32.0) -> np.ndarray:
    """The canonical double-gamma haemodynamic response (peak at ~5 s, undershoot at ~15 s).

    Parameters
    ----------
    dt : float
        Sampling interval, in seconds.
    duration : float
        Length of the kernel, in seconds.

    Returns
    -------
    ndarray, shape (ceil(duration / dt),)
        The kernel, normalised to unit sum.
    """
    times = np.arange(math.ceil(duration / dt)) * dt
    kernel = gamma.pdf(times, 6.0) - gamma.pdf(times, 16.0) / 6.0
    return kernel / kernel.sum()


def simulate_bold(
    sc: np.ndarray,
    *,
    t_r: float,
    n_frames: int,
    coupling: float,
    rng: np.random.Generator,
    noise: float = 0.02,
    bifurcation: float = -0.02,
    frequency_hz: float = 0.05,
    frequency_spread_hz: float = 0.008,
    max_dt: float = 0.1,
    transient_s: float = 60.0,
) -> np.ndarray:
    """BOLD-like parcel signals of a stochastic Hopf network on ``sc``.

    Parameters
    ----------
    sc : ndarray, shape (R, R)
        Non-negative structural connectome (e.g. from :func:`simulate_connectome`); scaled inside to a
        mean node strength of 1.
    t_r : float
        Repetition time of the output, in seconds.
    n_frames : int
        Number of output frames.
    coupling : float
        Global coupling ``G`` (see :func:`coupling_for_age`).
    rng : numpy.random.Generator
        Source of the frequencies and the noise.
    noise : float
        Standard deviation ``sigma`` of the additive noise, per sqrt(second).
    bifurcation : float
        Bifurcation parameter ``a`` shared by all regions (negative: noise-driven damped oscillations).
    frequency_hz, frequency_spread_hz : float
        Mean and standard deviation of the regions' intrinsic frequencies, in Hz.
    max_dt : float
        Largest integration step, in seconds; the step is ``t_r / ceil(t_r / max_dt)``.
    transient_s : float
        Simulated time discarded at the start, in seconds.

    Returns
    -------
    ndarray, shape (R, n_frames), float32
        The haemodynamic signal of each region, frame ``k`` at time ``k * t_r``.
    """
    sc = np.asarray(sc, dtype=float)
    n_regions = sc.shape[0]
    strength = sc.sum(axis=1)
    connectivity = sc / max(strength.mean(), 1e-12)
    node_strength = connectivity.sum(axis=1)
    substeps = math.ceil(t_r / max_dt - 1e-9)
    dt = t_r / substeps
    hrf = canonical_hrf(dt)
    n_transient = math.ceil(transient_s / dt)
    n_steps = n_transient + len(hrf) + n_frames * substeps
    omega = 2 * np.pi * np.clip(rng.normal(frequency_hz, frequency_spread_hz, n_regions), 0.005, None)
    linear = bifurcation + 1j * omega - coupling * node_strength
    z = 0.1 * (rng.standard_normal(n_regions) + 1j * rng.standard_normal(n_regions))
    kicks = noise * math.sqrt(dt) * rng.standard_normal((n_steps, 2, n_regions))
    activity = np.empty((n_steps, n_regions))
    coupled = (coupling * connectivity).astype(complex)
    # Thousands of small matrix-vector products: threaded BLAS only adds overhead (30x slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        for step in range(n_steps):
            drift = linear * z - (z.real**2 + z.imag**2) * z + coupled @ z
            z = z + dt * drift + kicks[step, 0] + 1j * kicks[step, 1]
            activity[step] = z.real
    kept = activity[n_transient:]  # (steps, R)
    bold = fftconvolve(kept, hrf[:, None], mode="full", axes=0)[len(hrf) : len(hrf) + n_frames * substeps]
    return np.ascontiguousarray(bold[::substeps].T, dtype=np.float32)


def region_centroids(labels_img: np.ndarray, affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Centroid of each labelled region, in world mm.

    Parameters
    ----------
    labels_img : ndarray of int, shape (X, Y, Z)
        Label volume, 0 background.
    affine : ndarray, shape (4, 4)
        Voxel-to-world matrix of ``labels_img``.
    indices : ndarray of int, shape (R,)
        Labels, in output order.

    Returns
    -------
    ndarray, shape (R, 3)
        Centroids in mm; NaN for a label absent from the volume.
    """
    voxels = np.argwhere(labels_img > 0)
    labels = labels_img[labels_img > 0].astype(int)
    size = int(max(labels.max(), np.max(indices))) + 1
    counts = np.bincount(labels, minlength=size).astype(float)
    sums = np.stack([np.bincount(labels, weights=voxels[:, a], minlength=size) for a in range(3)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_voxel = sums[np.asarray(indices)] / counts[np.asarray(indices), None]
    return mean_voxel @ affine[:3, :3].T + affine[:3, 3]
