"""Constrained spherical deconvolution of many voxels at once.

The computation is DIPY's ``dipy.reconst.csdeconv.csdeconv`` (Tournier et al. 2007), which DIPY runs voxel by
voxel: solve ``P f = X^T s`` with ``P = X^T X``; take the sphere directions where the order-4 part of ``f``
(or all of it, when that has none) is below ``tau`` times the FOD's mean; then repeatedly solve
``(P + H^T H) f = X^T s``, with ``H`` the regularisation rows ``B_reg`` of those directions, until the set of
directions stops changing. Here each iteration is done for every voxel still changing at once: the ``H^T H``
of all of them is one matrix product of their direction masks with the outer products of the ``B_reg`` rows,
and the small systems are solved together. The coefficients agree with DIPY's to float64 rounding
(tests/pipelines/dmri/test_dmri_csd.py; 7e-14 of the largest on the full demo DWI), in 21 s against 38 s for
DIPY's fit with two joblib processes on the same two cores (see docs/architecture.md, "Performance budget").
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel
from threadpoolctl import threadpool_limits

LOGGER = logging.getLogger("bsym.dmri")

#: Voxels solved together by one thread (their systems take CHUNK x K^2 x 8 bytes, 17 MB for K = 45). Smaller
#: chunks stay in cache: 19 s for the 138,701 fitted voxels of the full demo DWI on 2 threads, 24 s with 2048.
CHUNK = 1024
#: DIPY's fit starts from the order-4 part of the unconstrained solution: its first 15 coefficients.
LOW_ORDER_COEFFICIENTS = 15
#: Added to the diagonal of X^T X when it is not positive definite, as DIPY does.
MIN_NORM = 1e-5


def csd_coefficients(model: ConstrainedSphericalDeconvModel, signal: np.ndarray, *, n_threads: int = 1) -> np.ndarray:
    """SH coefficients of the FOD of each voxel, as DIPY's ``model.fit`` computes them.

    Parameters
    ----------
    model : ConstrainedSphericalDeconvModel
        Response, SH order, regularisation sphere, ``tau`` and iteration limit.
    signal : ndarray, shape (V, N)
        All N volumes of V voxels (the b0 columns are dropped here, as DIPY does).
    n_threads : int
        Threads, each solving chunks of :data:`CHUNK` voxels; the result does not depend on it.

    Returns
    -------
    ndarray, shape (V, K), float64
    """
    design = np.asarray(model._X, dtype=float)  # (N_dwi, K): response-weighted SH basis at the gradients
    regular = np.asarray(model.B_reg, dtype=float)  # (M, K): scaled SH basis on the regularisation sphere
    normal = design.T @ design
    try:
        np.linalg.cholesky(normal)
    except np.linalg.LinAlgError:
        normal = normal + MIN_NORM * np.eye(len(normal))
    outer = (regular[:, :, None] * regular[:, None, :]).reshape(len(regular), -1)  # (M, K * K)
    dwi = np.asarray(signal)[:, model._where_dwi]
    chunks = [slice(start, start + CHUNK) for start in range(0, len(dwi), CHUNK)]

    def solve(chunk: slice) -> tuple[np.ndarray, int]:
        return _deconvolve(dwi[chunk].astype(float) @ design, normal, regular, outer, model.tau, model.convergence)

    with threadpool_limits(1), ThreadPoolExecutor(max(1, n_threads)) as pool:
        results = list(pool.map(solve, chunks))
    unconverged = sum(count for _, count in results)
    if unconverged:
        LOGGER.warning(
            "CSD: %d of %d voxels did not converge in %d iterations", unconverged, len(dwi), model.convergence
        )
    return np.concatenate([coefficients for coefficients, _ in results]) if results else np.zeros((0, len(normal)))


def _deconvolve(
    projected: np.ndarray, normal: np.ndarray, regular: np.ndarray, outer: np.ndarray, tau: float, max_iter: int
) -> tuple[np.ndarray, int]:
    """Coefficients (V, K) from ``X^T s`` (V, K), and how many voxels were still changing after ``max_iter``."""
    n_coef = len(normal)
    coefficients = np.linalg.solve(normal, projected.T).T
    threshold = (regular[0, 0] * tau * coefficients[:, 0])[:, None]
    low = LOW_ORDER_COEFFICIENTS
    small = coefficients[:, :low] @ regular[:, :low].T < threshold
    smooth = ~small.any(1)
    small[smooth] = coefficients[smooth] @ regular.T < threshold[smooth]
    changing = np.flatnonzero(small.any(1))
    for _ in range(max_iter):
        if not len(changing):
            break
        systems = (small[changing].astype(float) @ outer).reshape(-1, n_coef, n_coef) + normal
        solved = np.linalg.solve(systems, projected[changing, :, None])[..., 0]
        coefficients[changing] = solved
        now_small = solved @ regular.T < threshold[changing]
        same = (now_small == small[changing]).all(1)
        small[changing] = now_small
        changing = changing[~same]
    return coefficients, len(changing)
