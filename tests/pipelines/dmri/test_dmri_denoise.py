"""MP-PCA denoising brings a noisy phantom closer to its noiseless twin and leaves the background alone."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.dmri.denoise import denoise_dwi
from simulation.phantom import crossing_phantom


def test_mppca_cuts_the_error_to_the_noiseless_phantom_at_least_in_half():
    clean = crossing_phantom(shape=(17, 15, 13), snr=np.inf)
    noisy = crossing_phantom(shape=(17, 15, 13), snr=15, seed=4)
    denoised = denoise_dwi(noisy.dwi, noisy.mask)
    mask = noisy.mask
    before = np.sqrt(np.mean((noisy.dwi - clean.dwi)[mask] ** 2))
    after = np.sqrt(np.mean((denoised - clean.dwi)[mask] ** 2))
    assert after < 0.5 * before
    np.testing.assert_array_equal(denoised[~mask], noisy.dwi[~mask])
    assert denoised.dtype == np.float32 and denoised.shape == (17, 15, 13, 32)


def test_the_batched_mppca_computes_what_dipy_computes():
    """Same patches, classifier, threshold and weights as DIPY's voxel loop, within float32 rounding."""
    from dipy.denoise.localpca import mppca

    noisy = crossing_phantom(shape=(17, 15, 13), snr=15, seed=4)
    ours = denoise_dwi(noisy.dwi, noisy.mask, patch_stride=1, n_threads=2)
    with np.errstate(invalid="ignore", divide="ignore"):  # DIPY divides by zero where no patch reaches
        dipy = mppca(noisy.dwi.astype(np.float32), mask=noisy.mask, patch_radius=2, suppress_warning=True)
    reached = noisy.mask & np.isfinite(dipy).all(-1)
    assert reached.sum() > 0.5 * noisy.mask.sum()
    scale = np.abs(noisy.dwi).max()
    np.testing.assert_allclose(ours[reached], dipy[reached], rtol=0, atol=1e-4 * scale)
    assert np.abs(ours - noisy.dwi)[reached].mean() > 100 * np.abs(ours - dipy)[reached].mean()  # it denoised
    # where no patch reaches (near the grid's edge), the data are kept, not DIPY's NaN
    edge = noisy.mask & ~reached
    np.testing.assert_array_equal(ours[edge], noisy.dwi[edge])


def test_strided_patches_denoise_every_brain_voxel_nearly_as_well_as_dense_ones():
    """Patches on every second voxel: the same voxels denoised, the error within 12% of the dense one's.

    Within 2 voxels of the grid's edge (outside the head in real data) fewer patches overlap; the rest of the
    phantom is what the bound is about. On the full-size demo DWI the strided error is 4% above the dense one.
    """
    clean = crossing_phantom(shape=(23, 19, 15), n_directions=48, snr=np.inf)
    noisy = crossing_phantom(shape=(23, 19, 15), n_directions=48, snr=15, seed=4)
    mask = noisy.mask
    dense = denoise_dwi(noisy.dwi, mask, patch_stride=1)
    strided = denoise_dwi(noisy.dwi, mask, patch_stride=2, n_threads=2)
    away_from_edge = np.zeros(mask.shape, bool)
    away_from_edge[3:-3, 3:-3, 3:-3] = True

    def error(denoised, where):
        return np.sqrt(np.mean((denoised - clean.dwi)[where] ** 2))

    assert error(strided, mask) < 0.5 * error(noisy.dwi, mask)
    assert error(strided, mask & away_from_edge) < 1.12 * error(dense, mask & away_from_edge)
    changed = (strided != noisy.dwi).any(-1)
    np.testing.assert_array_equal(changed[mask], (dense != noisy.dwi).any(-1)[mask])  # the same voxels reached
    np.testing.assert_array_equal(strided[~mask], noisy.dwi[~mask])
    assert not np.array_equal(strided, dense)
    with pytest.raises(ValueError, match="patch_stride"):
        denoise_dwi(noisy.dwi, mask, patch_stride=4)


def _denoise_in_child(_: int) -> float:
    noisy = crossing_phantom(shape=(13, 12, 11), snr=15, seed=4)
    return float(denoise_dwi(noisy.dwi, noisy.mask, n_threads=2).mean())


def test_denoising_runs_in_a_worker_forked_after_torch_used_its_threads():
    """Nipype's MultiProc forks its workers from bsym-app, which has used torch's OpenMP pool by then."""
    import multiprocessing

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (torch.randn(512, 512) @ torch.randn(512, 512)).sum()  # the parent's pool is started
        with multiprocessing.get_context("fork").Pool(1) as pool:  # leaving it kills a hung worker
            assert pool.apply_async(_denoise_in_child, (0,)).get(timeout=60) > 0
    finally:
        torch.set_num_threads(before)
