"""Loading images with nibabel as spatial images (voxel grid, affine, data), with a clear error otherwise.

``nibabel.load`` returns whatever image class matches the file (a GIFTI surface, a CIFTI matrix ...); the
scientific functions need a voxel image (NIfTI, or another format with a grid and an affine). :func:`load_image`
returns one or raises :class:`~pipelines.errors.InputDataError` naming the file.
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

import nibabel as nib
from nibabel.arrayproxy import ArrayProxy
from nibabel.spatialimages import SpatialImage

from pipelines.errors import InputDataError


def load_image(
    path: str | PathLike[str], *, mmap: bool | Literal["c", "r"] | None = None, keep_file_open: bool | None = None
) -> SpatialImage:
    """Load ``path`` with :func:`nibabel.load`; it must be a spatial (voxel) image such as a NIfTI.

    Parameters
    ----------
    path : str or path-like
        The image file.
    mmap : {True, False, "c", "r"}, optional
        Passed on to nibabel when given (memory-map the data); nibabel's default otherwise.
    keep_file_open : bool, optional
        Passed on to nibabel when given (keep the file handle open between reads); nibabel's default otherwise.

    Returns
    -------
    nibabel.spatialimages.SpatialImage

    Raises
    ------
    InputDataError
        The file is an image nibabel reads but not a voxel image (a surface or a CIFTI matrix, say).
    """
    options: dict[str, bool | str] = {}
    if mmap is not None:
        options["mmap"] = mmap
    if keep_file_open is not None:
        options["keep_file_open"] = keep_file_open
    img = nib.load(path, **options)
    if not isinstance(img, SpatialImage):
        raise InputDataError(
            f"{path}: expected a NIfTI image (a voxel grid with an affine), but nibabel reads it "
            f"as {type(img).__name__}; pass the .nii or .nii.gz image."
        )
    return img


def array_proxy(img: SpatialImage, path: str | PathLike[str]) -> ArrayProxy:
    """The proxy of an image loaded from ``path``: where its voxels lie in the file and how they are scaled.

    Raises
    ------
    InputDataError
        The image's data is not read from a file through an array proxy (an in-memory image).
    """
    proxy = img.dataobj
    if not isinstance(proxy, ArrayProxy):
        raise InputDataError(
            f"{path}: the image data are not read from the file (got {type(proxy).__name__}); "
            "pass a .nii or .nii.gz file."
        )
    return proxy
