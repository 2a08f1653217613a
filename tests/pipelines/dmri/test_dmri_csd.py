"""The batched CSD computes DIPY's voxel-by-voxel CSD."""

from __future__ import annotations

import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, auto_response_ssst

from pipelines.dmri.csd import csd_coefficients
from simulation.phantom import crossing_phantom


@pytest.mark.parametrize(("sh_order", "n_threads", "convergence"), [(6, 1, 50), (8, 2, 50), (6, 2, 2)])
@pytest.mark.filterwarnings("ignore:maximum number of iterations exceeded")
def test_batched_csd_equals_dipys_voxel_loop(sh_order, n_threads, convergence):
    """Order 6 from 30 directions; order 8 (45 coefficients from 30 directions: X^T X is singular); and DIPY's
    iteration limit, cut to 2 so that many voxels reach it."""
    phantom = crossing_phantom(shape=(17, 15, 13), snr=20, seed=3)
    gtab = gradient_table(phantom.bvals, bvecs=phantom.bvecs)
    response, _ = auto_response_ssst(gtab, phantom.dwi, roi_radii=5, fa_thr=0.5)
    model = ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=sh_order, convergence=convergence)
    mask = phantom.mask
    dipy = model.fit(phantom.dwi, mask=mask).shm_coeff[mask]
    ours = csd_coefficients(model, phantom.dwi[mask], n_threads=n_threads)
    assert ours.shape == dipy.shape == (mask.sum(), (sh_order + 1) * (sh_order + 2) // 2)
    np.testing.assert_allclose(ours, dipy, rtol=0, atol=1e-9 * np.abs(dipy).max())
    # the constraint did work: most voxels needed iterations, and their FODs differ from the unconstrained fit
    unconstrained = np.linalg.lstsq(model._X, phantom.dwi[mask][:, model._where_dwi].T, rcond=None)[0].T
    assert np.abs(ours - unconstrained).max(1).mean() > 0.01 * np.abs(ours).max()
