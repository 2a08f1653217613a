"""Optional DWI denoising (``--dwi-denoise``): Marchenko-Pastur PCA (Veraart et al. 2016) via DIPY.

Off by default; QSIPrep outputs are usually denoised already, and denoising twice blurs the data.
"""

from __future__ import annotations

import numpy as np
from dipy.denoise.localpca import mppca

#: Patch radius (voxels) of the local PCA; 2 gives 5 x 5 x 5 patches.
PATCH_RADIUS = 2


def denoise_dwi(dwi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Denoise a DWI with MP-PCA inside the brain mask.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion data.
    mask : ndarray, shape (X, Y, Z), bool
        Brain mask; voxels outside are returned unchanged.

    Returns
    -------
    ndarray, shape (X, Y, Z, N), float32
    """
    data = np.asarray(dwi, dtype=np.float32)
    denoised = mppca(data, mask=np.asarray(mask, bool), patch_radius=PATCH_RADIUS, suppress_warning=True)
    return np.where(mask[..., None], denoised, data).astype(np.float32)
