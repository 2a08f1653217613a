"""The diffusion gradient table: read, check against the image, and count directions.

:func:`check_gradients` is the one check the command line runs during input validation, before any
Nipype graph starts; the workflow runs it again on the files it receives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dipy.core.gradients import GradientTable, gradient_table

from pipelines.errors import InputDataError, MissingInputError
from pipelines.images import load_image

#: b-values at or below this (s/mm^2) count as b0 volumes.
B0_THRESHOLD = 50.0
#: A b-vector may deviate this much from unit length before the table is refused.
UNIT_TOLERANCE = 0.1
#: Directions closer than this (degrees, antipodes merged) count as one direction.
SAME_DIRECTION_DEG = 1.0
#: The diffusion tensor needs six non-collinear directions.
MIN_DIRECTIONS_DTI = 6
#: Highest spherical-harmonic order CSD is allowed to use.
MAX_SH_ORDER = 8


def check_gradients(
    dwi_file: str | Path,
    bval_file: str | Path,
    bvec_file: str | Path,
    *,
    b0_threshold: float = B0_THRESHOLD,
    min_directions: int = MIN_DIRECTIONS_DTI,
) -> GradientTable:
    """Check that a DWI and its FSL-style ``.bval``/``.bvec`` files belong together and can be modelled.

    Only the image header is read, so this is cheap enough for input validation.

    Parameters
    ----------
    dwi_file : str or Path
        4D diffusion image, shape (X, Y, Z, N).
    bval_file : str or Path
        b-values in s/mm^2, one row of N numbers.
    bvec_file : str or Path
        b-vectors, 3 rows of N numbers (FSL layout).
    b0_threshold : float, s/mm^2
        b-values at or below this are b0 volumes.
    min_directions : int
        Fewest distinct diffusion directions accepted (6 for the tensor model).

    Returns
    -------
    gtab : dipy.core.gradients.GradientTable
        The table with unit b-vectors (zero vectors for b0 volumes), N entries.

    Raises
    ------
    MissingInputError
        One of the three files does not exist.
    InputDataError
        Counts disagree, a b-vector is not unit length where b > 0, there is no b0 volume, or there are
        fewer than ``min_directions`` distinct directions. The message names the file and the fix.
    """
    dwi_file, bval_file, bvec_file = Path(dwi_file), Path(bval_file), Path(bvec_file)
    for path in (dwi_file, bval_file, bvec_file):
        if not path.exists():
            raise MissingInputError(f"{path}: file not found. Every DWI needs its .nii.gz, .bval and .bvec.")
    shape = load_image(dwi_file).shape
    if len(shape) != 4:
        raise InputDataError(f"{dwi_file}: a DWI must be 4D (x, y, z, volumes) but has shape {shape}.")
    n_volumes = shape[3]
    bvals = _read_table(bval_file, "bval").ravel()
    bvecs = _read_table(bvec_file, "bvec")
    if bvecs.ndim != 2 or bvecs.shape[0] != 3:
        hint = " It looks transposed: write it as 3 rows." if bvecs.ndim == 2 and bvecs.shape[1] == 3 else ""
        raise InputDataError(
            f"{bvec_file}: expected 3 rows of b-vector components (FSL layout), found shape {bvecs.shape}.{hint}"
        )
    if not (len(bvals) == bvecs.shape[1] == n_volumes):
        raise InputDataError(
            f"{dwi_file}: the image has {n_volumes} volumes but {bval_file.name} lists {len(bvals)} b-values "
            f"and {bvec_file.name} lists {bvecs.shape[1]} b-vectors. Use the .bval/.bvec written together "
            "with this image (after any volume removal, both files must be edited the same way)."
        )
    if not np.isfinite(bvals).all():
        raise InputDataError(f"{bval_file}: b-values contain NaN or infinity; every volume needs a number.")
    if np.any(bvals < 0):
        raise InputDataError(f"{bval_file}: negative b-values {np.unique(bvals[bvals < 0])}; b-values are >= 0.")
    is_b0 = bvals <= b0_threshold
    if not is_b0.any():
        raise InputDataError(
            f"{bval_file}: no b0 volume (smallest b-value {bvals.min():g} > {b0_threshold:g} s/mm^2). A b=0 "
            "image is needed for the brain mask, the signal normalisation and the registration; use an "
            "acquisition that includes one."
        )
    norms = np.linalg.norm(bvecs[:, ~is_b0], axis=0)
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_TOLERANCE))  # NaN counts as bad
    if bad.size:
        volume = np.flatnonzero(~is_b0)[bad[0]]
        raise InputDataError(
            f"{bvec_file}: {bad.size} b-vector(s) with b > {b0_threshold:g} are not unit length (volume "
            f"{volume} has length {norms[bad[0]]:.3f}). Normalise the b-vectors, or check that the file "
            "belongs to this DWI."
        )
    vectors = np.zeros_like(bvecs.T)
    vectors[~is_b0] = (bvecs[:, ~is_b0] / norms).T
    n_dirs = count_directions(vectors[~is_b0])
    if n_dirs < min_directions:
        raise InputDataError(
            f"{bvec_file}: only {n_dirs} distinct diffusion direction(s); at least {min_directions} are "
            "needed to fit a diffusion model. This DWI cannot give a structural connectome; skip the dMRI "
            "stage for it (--skip dmri)."
        )
    return gradient_table(bvals, bvecs=vectors, b0_threshold=b0_threshold)


def count_directions(vectors: np.ndarray) -> int:
    """Number of distinct directions, antipodal pairs merged.

    Parameters
    ----------
    vectors : ndarray, shape (n, 3)
        Unit vectors.

    Returns
    -------
    int
        Directions more than :data:`SAME_DIRECTION_DEG` apart (``v`` and ``-v`` are the same).
    """
    if len(vectors) == 0:
        return 0
    cos_same = np.cos(np.deg2rad(SAME_DIRECTION_DEG))
    kept: list[np.ndarray] = []
    for vector in vectors:
        if not kept or np.max(np.abs(np.asarray(kept) @ vector)) < cos_same:
            kept.append(vector)
    return len(kept)


def sh_order_for(n_directions: int) -> int:
    """Highest even spherical-harmonic order whose coefficient count fits the directions.

    Parameters
    ----------
    n_directions : int
        Distinct diffusion directions.

    Returns
    -------
    int
        ``l_max`` in {0, 2, 4, 6, 8} with ``(l_max + 1)(l_max + 2) / 2 <= n_directions``; capped at
        :data:`MAX_SH_ORDER`. CSD needs at least 4; below that the workflow falls back to tensor peaks.
    """
    order = 0
    while order + 2 <= MAX_SH_ORDER and (order + 3) * (order + 4) // 2 <= n_directions:
        order += 2
    return order


def gradient_directions(gtab: GradientTable) -> int:
    """Distinct directions among the diffusion-weighted volumes of ``gtab``."""
    return count_directions(gtab.bvecs[~gtab.b0s_mask])


def _read_table(path: Path, kind: str) -> np.ndarray:
    try:
        table = np.loadtxt(path, ndmin=2)
    except ValueError as err:
        raise InputDataError(
            f"{path}: cannot read the {kind} file as numbers ({err}). It must be plain text "
            "with space-separated numbers (FSL layout)."
        ) from None
    if table.size == 0:
        raise InputDataError(f"{path}: the {kind} file is empty.")
    return table
