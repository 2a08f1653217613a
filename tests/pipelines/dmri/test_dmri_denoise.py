"""MP-PCA denoising brings a noisy phantom closer to its noiseless twin and leaves the background alone."""

from __future__ import annotations

import numpy as np

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
