"""ITK/ANTs transform files as QSIPrep, fMRIPrep and TemplateFlow write them (the demo's fMRIPrep anat, tests)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipelines.atomic import atomic_path

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_itk_affine_h5(path: str | Path, ras: np.ndarray) -> Path:
    """Write a composite ``.h5`` holding one affine (ITK's HDF5 layout, as antsRegistration writes it).

    ``ras`` (4 x 4) maps points of the reference (fixed) space to points of the moving space, in RAS mm; ITK
    stores it in LPS with a zero centre.
    """
    lps = _LPS @ np.asarray(ras, float) @ _LPS
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        group = h5.create_group("TransformGroup")
        composite = group.create_group("0")
        composite["TransformType"] = np.array([b"CompositeTransform_double_3_3"])
        affine = group.create_group("1")
        affine["TransformType"] = np.array([b"AffineTransform_double_3_3"])
        affine["TransformParameters"] = np.r_[lps[:3, :3].ravel(), lps[:3, 3]]
        affine["TransformFixedParameters"] = np.zeros(3)
    return path
