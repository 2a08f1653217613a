"""The DWI brain mask: the one given with the data (QSIPrep), else median Otsu on the mean b0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dipy.core.gradients import GradientTable
from dipy.segment.mask import median_otsu

from pipelines.errors import InputDataError
from pipelines.images import load_image

#: Smallest plausible brain mask, in voxels; fewer means the mask (or the image) is wrong.
MIN_MASK_VOXELS = 8


def mean_b0(dwi: np.ndarray, gtab: GradientTable) -> np.ndarray:
    """Mean of the b0 volumes.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion data.
    gtab : GradientTable
        N entries; ``gtab.b0s_mask`` marks the b0 volumes.

    Returns
    -------
    ndarray, shape (X, Y, Z), float32
    """
    return np.asarray(dwi[..., gtab.b0s_mask], dtype=np.float32).mean(axis=-1)


def brain_mask(
    dwi: np.ndarray,
    gtab: GradientTable,
    *,
    mask_file: str | Path | None = None,
    dwi_file: str | Path = "the DWI",
    dwi_affine: np.ndarray | None = None,
) -> np.ndarray:
    """Brain mask of a DWI: the given mask file, else median Otsu on the mean b0.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion data.
    gtab : GradientTable
        N entries.
    mask_file : str or Path, optional
        Mask on the DWI grid (QSIPrep's ``desc-brain_mask``); voxels > 0 are brain. ``None`` or ``""``
        computes one.
    dwi_file : str or Path
        Name of the DWI, for messages.
    dwi_affine : ndarray, shape (4, 4), optional
        Voxel-to-world affine of the DWI; when given, a mask on another grid is refused.

    Returns
    -------
    ndarray, shape (X, Y, Z), bool

    Raises
    ------
    InputDataError
        The mask file is on another grid or (nearly) empty, or no brain is found in the b0 when no mask is
        given.
    """
    if mask_file:
        img = load_image(mask_file)
        if img.shape[:3] != dwi.shape[:3] or (
            dwi_affine is not None and not np.allclose(img.affine, dwi_affine, atol=1e-3)
        ):
            raise InputDataError(
                f"{mask_file}: the brain mask is not on the grid of {dwi_file} (mask shape {img.shape[:3]}, "
                f"DWI shape {dwi.shape[:3]}). Use the mask written with this DWI (QSIPrep: the "
                "desc-brain_mask of the same space), or leave it out to compute one."
            )
        mask = np.asarray(img.dataobj) > 0
        if mask.sum() < MIN_MASK_VOXELS:
            raise InputDataError(
                f"{mask_file}: the brain mask has {int(mask.sum())} voxels, so there is no brain to track "
                f"in {dwi_file}. Use the mask written with this DWI, or leave it out to compute one."
            )
        return mask
    b0 = np.nan_to_num(mean_b0(dwi, gtab))
    mask = np.zeros(b0.shape, dtype=bool)
    if b0.max() > 0:
        _, mask = median_otsu(b0, median_radius=2, numpass=1)
        mask &= b0 > 0
    if mask.sum() < MIN_MASK_VOXELS:
        raise InputDataError(
            f"{dwi_file}: no brain found in the mean b0 image (Otsu mask has {int(mask.sum())} voxels); the "
            "b0 volumes may be empty or the bval file may mark the wrong volumes as b0. Check the image, or "
            "provide a brain mask (QSIPrep writes one next to desc-preproc_dwi)."
        )
    return mask.astype(bool)
