"""Labels through existing transform files: ITK/ANTs ``.h5`` composites and ``.txt`` affines, read by nitransforms.

Used for the participant's template-to-anatomy transforms (QSIPrep, fMRIPrep, sMRIPrep) and TemplateFlow's
template-to-template transforms; nothing is estimated here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from pipelines.errors import InputDataError


def through_transforms(
    atlas_img: SpatialImage, transforms: Sequence[str | Path | np.ndarray], reference: SpatialImage
) -> nib.Nifti1Image:
    """Resample the labels of ``atlas_img`` onto ``reference``'s grid through ``transforms`` (nearest neighbour).

    ``transforms`` are in antsApplyTransforms order (``-t A -t B``): a point of the reference goes through the
    last one first (B, then A) to reach the atlas's space, as ITK transform files map points. A 4 x 4 array is
    a world (RAS mm) affine with the same meaning, e.g. a rigid fit of the reference to an anatomical image.
    """
    import nitransforms as nt

    grid = nib.Nifti1Image(np.zeros(reference.shape[:3], np.uint8), reference.affine)
    with warnings.catch_warnings():
        # nitransforms warns whenever it chains an affine without a grid of its own, as in every .h5 composite;
        # the grid is given to apply()
        warnings.filterwarnings("ignore", "Reference space not set", UserWarning)
        chain = []
        for path in reversed(transforms):
            if isinstance(path, np.ndarray):
                chain.append(nt.linear.Affine(path))
                continue
            name = str(path)
            try:
                chain += (
                    list(nt.manip.load(name, fmt="itk").transforms)
                    if name.endswith(".h5")
                    else [nt.linear.load(name, fmt="itk")]
                )
            except Exception as exc:
                raise InputDataError(f"{path}: not a transform nitransforms can read as ITK/ANTs ({exc}).") from exc
        mapping = chain[0] if len(chain) == 1 else nt.manip.TransformChain(chain)
        moved = nt.resampling.apply(mapping, atlas_img, reference=grid, order=0, mode="constant", cval=0)
    return nib.Nifti1Image(np.rint(np.asarray(moved.dataobj)).astype(np.int32), reference.affine)
