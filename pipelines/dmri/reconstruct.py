"""Fibre orientation distributions: constrained spherical deconvolution, or tensor peaks as a fallback.

Both paths end as spherical-harmonic coefficients in DIPY's default basis (``descoteaux07``, legacy), so
tracking has one code path and can sample the PMF straight from the coefficients.

* CSD (Tournier et al. 2007): single-shell single-tissue, response from voxels with FA > 0.7 inside the
  mask, ``l_max`` the highest even order whose coefficient count fits the number of directions (max 8).
* Tensor peaks, used when the directions do not allow ``l_max >= 4`` (6 to 14 directions): the principal
  eigenvector as a sharp lobe ``|v . e1|^TENSOR_LOBE_POWER`` projected onto order-8 harmonics. This gives
  one fibre per voxel and no crossings; the metadata records ``model = "tensor-peaks"``.

The tensor (for FA) is fitted in every mask voxel, in slabs shared between threads. With ``min_fa`` the CSD is
fitted only where tracking can read it: tracking evaluates the FOD, by trilinear interpolation, at its seeds
(inside voxels above the seed FA) and at points whose interpolated FA is above the stopping FA, so every voxel it
reads is within one voxel of a voxel at or above the smaller of the two. The streamlines are the same as with
FODs everywhere (tests/pipelines/dmri/test_dmri_tracking.py) for 60% of the fitting work on the full demo DWI.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from dipy.core.gradients import GradientTable
from dipy.data import default_sphere
from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, response_from_mask_ssst
from dipy.reconst.dti import TensorModel
from dipy.reconst.shm import sf_to_sh
from scipy import ndimage
from threadpoolctl import threadpool_limits

from pipelines.dmri.csd import csd_coefficients
from pipelines.dmri.gradients import gradient_directions, sh_order_for

#: FA above which a voxel may serve for the single-fibre response.
RESPONSE_FA = 0.7
#: Fewest voxels for a response estimate; below that the highest-FA voxels are used.
MIN_RESPONSE_VOXELS = 20
#: Sharpness of the tensor-peak lobe (higher is narrower; 20 is about 15 degrees half width).
TENSOR_LOBE_POWER = 20
#: SH order used to represent tensor peaks.
TENSOR_SH_ORDER = 8


@dataclass(frozen=True)
class FodFit:
    """Fibre orientations on the DWI grid.

    Attributes
    ----------
    sh : ndarray, shape (X, Y, Z, K), float32
        SH coefficients (``descoteaux07`` legacy basis), zero outside the mask.
    fa : ndarray, shape (X, Y, Z), float32
        Tensor fractional anisotropy in [0, 1], zero outside the mask.
    model : str
        ``"csd"`` or ``"tensor-peaks"``.
    sh_order : int
        ``l_max`` of ``sh``.
    response : tuple of float
        CSD response eigenvalues (mm^2/s) and S0; empty for tensor peaks.
    min_fa : float
        ``sh`` is fitted only within one voxel of FA >= this (0: every mask voxel); tracking needs seed and
        stopping FA at least this high.
    """

    sh: np.ndarray
    fa: np.ndarray
    model: str
    sh_order: int
    response: tuple[float, ...] = ()
    min_fa: float = 0.0


def fit_fods(
    dwi: np.ndarray,
    gtab: GradientTable,
    mask: np.ndarray,
    *,
    sh_order: int | None = None,
    model: str = "auto",
    min_fa: float = 0.0,
    n_jobs: int = 1,
) -> FodFit:
    """Fit fibre orientations in the mask voxels (all of them, or those tracking can read: ``min_fa``).

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion data.
    gtab : GradientTable
        N entries.
    mask : ndarray, shape (X, Y, Z), bool
        Voxels to fit.
    sh_order : int, optional
        CSD ``l_max``; default: the highest the directions allow (:func:`sh_order_for`).
    model : {"auto", "csd", "tensor-peaks"}
        ``auto`` is CSD when ``l_max >= 4`` fits the directions, else tensor peaks.
    min_fa : float
        CSD only in mask voxels within one voxel of FA >= ``min_fa`` (tracking's smaller of seed and stopping
        FA reads no others); zero coefficients elsewhere. 0 fits every mask voxel.
    n_jobs : int
        Threads for the tensor and CSD fits; the result does not depend on it.

    Returns
    -------
    FodFit
    """
    mask = np.asarray(mask, dtype=bool)
    data = np.asarray(dwi, dtype=np.float32)
    fa, principal = _fit_tensor(data, gtab, mask, n_jobs)
    order = sh_order if sh_order is not None else sh_order_for(gradient_directions(gtab))
    if model == "auto":
        model = "csd" if order >= 4 else "tensor-peaks"
    if model == "tensor-peaks":
        return FodFit(sh=_tensor_peak_sh(principal, mask), fa=fa, model=model, sh_order=TENSOR_SH_ORDER)
    if model != "csd":
        raise ValueError(f"unknown FOD model {model!r}; use 'auto', 'csd' or 'tensor-peaks'")
    response, _ = response_from_mask_ssst(gtab, data, _response_voxels(fa, mask))
    csd = ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=order)
    fitted = mask
    if min_fa > 0:
        fitted = mask & ndimage.binary_dilation(mask & (fa >= min_fa), np.ones((3, 3, 3), bool))
    sh = np.zeros((*mask.shape, len(csd.B_reg[0])), dtype=np.float32)
    sh[fitted] = csd_coefficients(csd, data[fitted], n_threads=n_jobs)
    evals, s0 = response
    response_values = (*(float(v) for v in evals), float(s0))
    return FodFit(sh=sh, fa=fa, model="csd", sh_order=order, response=response_values, min_fa=float(min_fa))


def _fit_tensor(data: np.ndarray, gtab: GradientTable, mask: np.ndarray, n_jobs: int) -> tuple[np.ndarray, np.ndarray]:
    """FA (X, Y, Z) and principal eigenvector (X, Y, Z, 3) of DIPY's WLS tensor, in slabs along x on threads.

    DIPY's fit is voxel-wise (one small SVD each, outside the GIL), so the slabs give the same values: 3.8 s
    against 10.5 s in one piece on the full demo DWI with 2 threads.
    """
    model = TensorModel(gtab)
    edges = np.linspace(0, mask.shape[0], 2 * max(1, n_jobs) + 1).astype(int)
    slabs = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    with threadpool_limits(1), ThreadPoolExecutor(max(1, n_jobs)) as pool:
        fits = list(pool.map(lambda slab: model.fit(data[slab], mask=mask[slab]), slabs))
    fa = np.concatenate([np.nan_to_num(fit.fa) for fit in fits]).astype(np.float32) * mask
    return fa, np.concatenate([fit.evecs[..., 0] for fit in fits])


def _response_voxels(fa: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Single-fibre voxels: FA > RESPONSE_FA, else the MIN_RESPONSE_VOXELS highest-FA voxels."""
    chosen = mask & (fa > RESPONSE_FA)
    if chosen.sum() >= MIN_RESPONSE_VOXELS:
        return chosen
    in_mask = np.flatnonzero(mask.ravel())
    top = in_mask[np.argsort(fa.ravel()[in_mask])[-MIN_RESPONSE_VOXELS:]]
    chosen = np.zeros(mask.size, dtype=bool)
    chosen[top] = True
    return chosen.reshape(mask.shape)


def _tensor_peak_sh(principal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Order-8 SH of a sharp lobe around each voxel's principal eigenvector; (X, Y, Z, 3) -> (X, Y, Z, 45)."""
    vertices = default_sphere.vertices
    n_coef = (TENSOR_SH_ORDER + 1) * (TENSOR_SH_ORDER + 2) // 2
    sh = np.zeros((*mask.shape, n_coef), dtype=np.float32)
    lobes = np.abs(principal[mask] @ vertices.T) ** TENSOR_LOBE_POWER
    sh[mask] = sf_to_sh(lobes, default_sphere, sh_order_max=TENSOR_SH_ORDER)
    return sh
