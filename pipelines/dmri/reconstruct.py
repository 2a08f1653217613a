"""Fibre orientation distributions: constrained spherical deconvolution, or tensor peaks as a fallback.

Both paths end as spherical-harmonic coefficients in DIPY's default basis (``descoteaux07``, legacy), so
tracking has one code path and can sample the PMF straight from the coefficients.

* CSD (Tournier et al. 2007): single-shell single-tissue, response from voxels with FA > 0.7 inside the
  mask, ``l_max`` the highest even order whose coefficient count fits the number of directions (max 8).
* Tensor peaks, used when the directions do not allow ``l_max >= 4`` (6 to 14 directions): the principal
  eigenvector as a sharp lobe ``|v . e1|^TENSOR_LOBE_POWER`` projected onto order-8 harmonics. This gives
  one fibre per voxel and no crossings; the metadata records ``model = "tensor-peaks"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dipy.core.gradients import GradientTable
from dipy.data import default_sphere
from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, response_from_mask_ssst
from dipy.reconst.dti import TensorModel
from dipy.reconst.shm import sf_to_sh

from pipelines.dmri.gradients import gradient_directions, sh_order_for

#: FA above which a voxel may serve for the single-fibre response.
RESPONSE_FA = 0.7
#: Fewest voxels for a response estimate; below that the highest-FA voxels are used.
MIN_RESPONSE_VOXELS = 20
#: Sharpness of the tensor-peak lobe (higher is narrower; 20 is about 15 degrees half width).
TENSOR_LOBE_POWER = 20
#: SH order used to represent tensor peaks.
TENSOR_SH_ORDER = 8
#: Chunks of mask voxels per CSD process. DIPY's default, one chunk each, leaves a process idle while the other
#: finishes a half with more crossing fibres (more iterations): 35.5 s against 32.7 s with 8 each on the full
#: demo DWI with 2 processes, the same coefficients.
CSD_CHUNKS_PER_JOB = 8


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
    """

    sh: np.ndarray
    fa: np.ndarray
    model: str
    sh_order: int
    response: tuple[float, ...] = ()


def fit_fods(
    dwi: np.ndarray,
    gtab: GradientTable,
    mask: np.ndarray,
    *,
    sh_order: int | None = None,
    model: str = "auto",
    n_jobs: int = 1,
) -> FodFit:
    """Fit fibre orientations in every mask voxel.

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
    n_jobs : int
        Processes for the voxel-wise CSD fit (joblib); the result does not depend on it.

    Returns
    -------
    FodFit
    """
    mask = np.asarray(mask, dtype=bool)
    data = np.asarray(dwi, dtype=np.float32)
    tensor = TensorModel(gtab).fit(data, mask=mask)
    fa = np.nan_to_num(tensor.fa).astype(np.float32) * mask
    order = sh_order if sh_order is not None else sh_order_for(gradient_directions(gtab))
    if model == "auto":
        model = "csd" if order >= 4 else "tensor-peaks"
    if model == "tensor-peaks":
        return FodFit(sh=_tensor_peak_sh(tensor.evecs[..., 0], mask), fa=fa, model=model, sh_order=TENSOR_SH_ORDER)
    if model != "csd":
        raise ValueError(f"unknown FOD model {model!r}; use 'auto', 'csd' or 'tensor-peaks'")
    response, _ = response_from_mask_ssst(gtab, data, _response_voxels(fa, mask))
    csd = ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=order)
    parallel: dict = {}
    if n_jobs > 1:
        chunk = max(1, int(mask.sum()) // (CSD_CHUNKS_PER_JOB * int(n_jobs)))
        parallel = {"engine": "joblib", "n_jobs": int(n_jobs), "vox_per_chunk": chunk}
    sh = csd.fit(data, mask=mask, **parallel).shm_coeff.astype(np.float32)
    if parallel:
        _stop_joblib_workers()
    evals, s0 = response
    return FodFit(sh=sh, fa=fa, model="csd", sh_order=order, response=(*(float(v) for v in evals), float(s0)))


def _stop_joblib_workers() -> None:
    """Stop joblib's idle worker processes now.

    They would otherwise live on for joblib's idle timeout (300 s), holding their copies of the DWI, and a
    Nipype worker that exits waits for its children: the graph's end was held up by 90 s at full size.
    """
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


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
