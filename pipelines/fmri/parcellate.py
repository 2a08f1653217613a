"""The parcellation operator: parcel means of a BOLD series over atlas regions, inside the brain mask.

The mean of parcel r at volume t is the plain average of the BOLD values of the voxels that carry label r
*and* lie inside the brain mask (the quantity ``nilearn.maskers.NiftiLabelsMasker(mask_img=...,
strategy="mean")`` returns). It is computed as one sparse region-by-voxel averaging matrix, built once per atlas,
mask and grid (:func:`build_parcel_operator`), applied to the series read once, a chunk of volumes at a time
(:func:`parcel_means`), so memory stays at one chunk whatever the run length. Sums are accumulated in float64.

Coverage of parcel r is the fraction of its voxels (on the BOLD grid) that lie inside the brain mask; a parcel
absent from the grid has coverage 0 and a NaN mean.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from nibabel.arrayproxy import ArrayProxy
from nibabel.spatialimages import SpatialImage

from pipelines.docstrings import fill_doc
from pipelines.errors import InputDataError
from pipelines.fmri.atlas_grid import AFFINE_ATOL_MM
from pipelines.images import load_image
from pipelines.niftistream import iter_volume_blocks

#: Volumes read and reduced at once; 32 volumes of a 2 mm MNI grid are about 115 MB as float32.
DEFAULT_CHUNK = 32


@dataclass(frozen=True)
class ParcelOperator:
    """Region-by-voxel averaging operator on one grid.

    Attributes
    ----------
    labels : ndarray, shape (R,)
        Atlas indices, in output order.
    voxels : ndarray, shape (N,)
        Flat (Fortran-order) indices of the grid voxels that are in the mask and carry one of ``labels``.
    weights : scipy.sparse.csr_array, shape (R, N)
        ``weights[r, n] = 1 / n_r`` when voxel ``voxels[n]`` belongs to region r (n_r its in-mask voxels).
    coverage : ndarray, shape (R,)
        Fraction (0-1) of each region's voxels inside the mask; 0 for a region absent from the grid.
    n_voxels : ndarray, shape (R,)
        In-mask voxel count per region.
    grid_shape : tuple of 3 int
        The grid (X, Y, Z) the operator applies to.
    """

    labels: np.ndarray
    voxels: np.ndarray
    weights: sp.csr_array
    coverage: np.ndarray
    n_voxels: np.ndarray
    grid_shape: tuple[int, ...]

    def apply(self, volumes: np.ndarray) -> np.ndarray:
        """Parcel means of a block of volumes.

        Parameters
        ----------
        volumes : ndarray, shape (X, Y, Z, C)
            C volumes on :attr:`grid_shape`.

        Returns
        -------
        ndarray, shape (C, R), float64
            Means over each region's in-mask voxels; NaN for a region with no in-mask voxel. Non-finite
            voxel values count as 0 (as nilearn does).
        """
        n_volumes = volumes.shape[3]
        flat = volumes.reshape(-1, n_volumes, order="F")  # (X*Y*Z, C), a view for Fortran-ordered data
        picked = np.asarray(flat[self.voxels], dtype=np.float64)  # (N, C)
        if not np.isfinite(picked).all():
            picked[~np.isfinite(picked)] = 0.0
        means = (self.weights @ picked).T  # (R, N) @ (N, C) -> (R, C) -> (C, R)
        means[:, self.n_voxels == 0] = np.nan
        return np.ascontiguousarray(means)


@fill_doc
def build_parcel_operator(atlas_labels: np.ndarray, mask: np.ndarray, labels) -> ParcelOperator:
    """Build the averaging operator of ``labels`` over the in-mask voxels of ``atlas_labels``.

    Parameters
    ----------
    atlas_labels : ndarray of int, shape (X, Y, Z)
        Atlas on the BOLD grid (0 = background).
    mask : ndarray, shape (X, Y, Z)
        Brain mask on the same grid; non-zero is brain.
    %(labels)s

    Returns
    -------
    ParcelOperator
    """
    if atlas_labels.shape != mask.shape:
        raise ValueError(f"atlas grid {atlas_labels.shape} and mask grid {mask.shape} differ")
    labels = np.asarray(labels, dtype=np.int64)
    flat_labels = atlas_labels.reshape(-1, order="F")
    flat_mask = mask.reshape(-1, order="F") > 0
    # row of each voxel's label in `labels` (-1: not a requested label)
    lookup = {int(label): row for row, label in enumerate(labels)}
    present = np.unique(flat_labels)
    row_of_value = np.full(present.shape, -1, dtype=np.int64)
    for i, value in enumerate(present):
        row_of_value[i] = lookup.get(int(value), -1)
    rows_all = row_of_value[np.searchsorted(present, flat_labels)]  # (X*Y*Z,)
    n_total = np.bincount(rows_all[rows_all >= 0], minlength=len(labels))
    selected = (rows_all >= 0) & flat_mask
    voxels = np.flatnonzero(selected)
    rows = rows_all[voxels]
    n_voxels = np.bincount(rows, minlength=len(labels))
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.where(n_total > 0, n_voxels / np.maximum(n_total, 1), 0.0)
        values = 1.0 / n_voxels[rows]
    weights = sp.csr_array((values, (rows, np.arange(len(voxels)))), shape=(len(labels), len(voxels)))
    return ParcelOperator(
        labels=labels,
        voxels=voxels,
        weights=weights,
        coverage=coverage.astype(float),
        n_voxels=n_voxels,
        grid_shape=tuple(int(n) for n in atlas_labels.shape),
    )


@fill_doc
def parcel_means(
    bold_img: str | Path, atlas_img: str | Path, mask_img: str | Path, labels, *, chunk: int = DEFAULT_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Parcel mean time series of a 4D BOLD image and the coverage of every parcel.

    Parameters
    ----------
    bold_img : str or Path
        4D BOLD series (X, Y, Z, T), ``.nii`` or ``.nii.gz``.
    %(atlas_img)s
        Must be on the BOLD grid (see :func:`pipelines.fmri.atlas_grid.atlas_on_grid`).
    %(mask_img)s
    %(labels)s
    chunk : int
        Volumes read and reduced at once (memory ~ chunk x grid voxels x 8 bytes).

    Returns
    -------
    means : ndarray, shape (T, R), float64
        Mean over each parcel's in-mask voxels, per volume; NaN columns for parcels with no in-mask voxel.
    coverage : ndarray, shape (R,)
        Fraction (0-1) of each parcel's voxels inside the mask.
    """
    bold = load_image(bold_img, keep_file_open=True)
    if bold.ndim != 4:
        raise InputDataError(
            f"{bold_img}: a BOLD series must be 4D, this image has shape {bold.shape}; "
            "pass the *_desc-preproc_bold.nii.gz of fMRIPrep."
        )
    grid = tuple(int(n) for n in bold.shape[:3])
    atlas = _load_on_grid(atlas_img, grid, bold.affine, bold_img, what="atlas")
    mask = _load_on_grid(mask_img, grid, bold.affine, bold_img, what="brain mask")
    operator = build_parcel_operator(np.rint(atlas).astype(np.int64), mask, labels)
    means = np.empty((bold.shape[3], len(operator.labels)), dtype=np.float64)
    for start, volumes in _volume_chunks(bold, chunk):
        means[start : start + volumes.shape[3]] = operator.apply(volumes)
    return means, operator.coverage


def _volume_chunks(bold: SpatialImage, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_volume, volumes (X, Y, Z, C))`` blocks of a 4D image, each read once, in order.

    An uncompressed, unscaled image is memory-mapped (only the pages of atlas voxels are touched). Otherwise the
    file is read once, sequentially, by :func:`pipelines.niftistream.iter_volume_blocks` (ISA-L gzip, one block
    read ahead in a thread), so memory stays at two blocks.
    """
    n_volumes = bold.shape[3]
    starts = range(0, n_volumes, chunk)
    mapped = _memory_map(bold)
    if mapped is not None:
        for start in starts:
            yield start, mapped[..., start : start + chunk]
        return

    filename = bold.get_filename()
    if filename is None:
        raise ValueError("the BOLD image must be read from a file")
    yield from iter_volume_blocks(filename, chunk)


def _memory_map(bold: SpatialImage) -> np.ndarray | None:
    """The image as a read-only memmap when it is uncompressed and unscaled, else None."""
    filename = bold.get_filename() or ""
    if filename.endswith(".gz"):
        return None
    proxy = bold.dataobj
    if not isinstance(proxy, ArrayProxy):  # not read from a file
        return None
    slope, inter = proxy.slope, proxy.inter
    if not (slope == 1 and inter == 0):
        return None
    try:
        data = np.asanyarray(load_image(filename, mmap="r").dataobj)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, np.memmap) else None


def _load_on_grid(
    path: str | Path, grid: tuple[int, ...], affine: np.ndarray, bold_path: str | Path, *, what: str
) -> np.ndarray:
    """Data of a 3D image that must share the BOLD grid; a clear error otherwise."""
    img = load_image(path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != grid or not np.allclose(img.affine, affine, atol=AFFINE_ATOL_MM):
        raise InputDataError(
            f"{path}: the {what} grid (shape {data.shape}) differs from the BOLD grid of {bold_path} "
            f"(shape {grid}) or its affine differs. Use the {what} of the same space and resolution as the "
            "BOLD series (for the atlas: resample it with pipelines.fmri.atlas_grid.atlas_on_grid)."
        )
    return data
