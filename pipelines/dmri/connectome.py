"""Structural connectomes: streamline endpoint counts per parcel pair and the signed transform.

Counts are symmetric with a zero diagonal. The signed connectome (the model's input; docs/model.md,
"Signed structural connectome") is ``log10_count_per_volume``: ``log10(count_ij / ((V_i + V_j) / 2))`` for
counts > 0 and 0 where the count is 0, with V the parcel volume in mm^3 inside the DWI brain mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nibabel.spatialimages import SpatialImage
from scipy import ndimage

from pipelines.atomic import write_text
from pipelines.docstrings import fill_doc
from pipelines.images import load_image

#: Name of the signed transform, recorded in every sidecar and checked against a bundle's ``sc_transform``
#: (``brainsymphony.bundle.SIGNED_TRANSFORM``, which the model package keeps torch-side; a test ties the two).
SIGNED_TRANSFORM = "log10_count_per_volume"
#: An endpoint in unlabelled tissue is given the nearest parcel within this distance (mm).
ENDPOINT_SEARCH_MM = 2.0


def endpoint_labels(
    streamlines: Sequence[np.ndarray], atlas: np.ndarray, affine: np.ndarray, *, search_mm: float = ENDPOINT_SEARCH_MM
) -> np.ndarray:
    """Atlas label at both ends of every streamline.

    An end in an unlabelled voxel takes the label of the nearest labelled voxel within ``search_mm``
    (tracking stops at the grey-matter boundary, often one step short of the parcel); else 0.

    Parameters
    ----------
    streamlines : sequence of ndarray, each shape (n_i, 3)
        World coordinates, mm.
    atlas : ndarray, shape (X, Y, Z), int
        Label image.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of ``atlas``.
    search_mm : float, mm
        Radius of the nearest-parcel search; 0 disables it.

    Returns
    -------
    ndarray, shape (N, 2), int
        Labels of the first and last point.
    """
    if len(streamlines) == 0:
        return np.zeros((0, 2), dtype=int)
    ends = np.concatenate([np.stack([s[0], s[-1]]) for s in streamlines])
    inverse = np.linalg.inv(affine)
    voxels = np.rint(ends @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    inside = np.all((voxels >= 0) & (voxels < atlas.shape), axis=1)
    voxels = np.clip(voxels, 0, np.asarray(atlas.shape) - 1)
    nearest = _nearest_labels(atlas, affine, search_mm)
    labels = np.where(inside, nearest[tuple(voxels.T)], 0)
    return labels.reshape(-1, 2)


@fill_doc
def count_connectome(
    streamlines: Sequence[np.ndarray],
    atlas_img: SpatialImage | str | Path,
    labels: Sequence[int],
    *,
    search_mm: float = ENDPOINT_SEARCH_MM,
) -> np.ndarray:
    """Streamline counts between parcels (endpoint assignment), symmetric with a zero diagonal.

    Parameters
    ----------
    streamlines : sequence of ndarray, each shape (n_i, 3)
        World coordinates, mm, in the space of ``atlas_img``.
    %(atlas_img)s
    %(labels)s
    search_mm : float, mm
        See :func:`endpoint_labels`.

    Returns
    -------
    ndarray, shape (R, R), int64
        ``counts[i, j]``: streamlines with one end in ``labels[i]`` and the other in ``labels[j]``;
        streamlines with an end outside every listed parcel, or both ends in one parcel, are not counted.
    """
    atlas_img = load_image(atlas_img) if isinstance(atlas_img, (str, Path)) else atlas_img
    atlas = np.asarray(atlas_img.dataobj).astype(np.int64)
    indices = np.asarray(labels, dtype=np.int64)
    ends = endpoint_labels(streamlines, atlas, atlas_img.affine, search_mm=search_mm)
    lookup = np.full(max(int(atlas.max()), int(indices.max())) + 1, -1, dtype=np.int64)
    lookup[indices] = np.arange(len(indices))
    index = lookup[np.clip(ends, 0, len(lookup) - 1)]
    index[ends < 0] = -1
    keep = np.all(index >= 0, axis=1) & (index[:, 0] != index[:, 1])
    counts = np.zeros((len(indices), len(indices)), dtype=np.int64)
    np.add.at(counts, (index[keep, 0], index[keep, 1]), 1)
    return counts + counts.T


@fill_doc
def parcel_volumes(
    atlas_img: SpatialImage | str | Path, mask_img: SpatialImage | str | Path, labels: Sequence[int]
) -> np.ndarray:
    """Volume of each parcel inside the brain mask.

    Parameters
    ----------
    %(atlas_img)s
    %(mask_img)s
    %(labels)s

    Returns
    -------
    ndarray, shape (R,), float64, mm^3
    """
    atlas_img = load_image(atlas_img) if isinstance(atlas_img, (str, Path)) else atlas_img
    mask_img = load_image(mask_img) if isinstance(mask_img, (str, Path)) else mask_img
    atlas = np.asarray(atlas_img.dataobj).astype(np.int64)
    inside = atlas[np.asarray(mask_img.dataobj) > 0]
    voxel_mm3 = round(float(abs(np.linalg.det(atlas_img.affine[:3, :3]))), 6)  # 8.0, not 7.9999999
    histogram = np.bincount(inside[inside > 0], minlength=int(max(labels)) + 1)
    return histogram[np.asarray(labels, dtype=np.int64)] * voxel_mm3


def signed_connectome(counts: np.ndarray, volumes_mm3: np.ndarray) -> np.ndarray:
    """The ``log10_count_per_volume`` transform of docs/model.md ("Signed structural connectome").

    Parameters
    ----------
    counts : ndarray, shape (R, R)
        Symmetric streamline counts.
    volumes_mm3 : ndarray, shape (R,), mm^3
        Parcel volumes inside the brain mask.

    Returns
    -------
    ndarray, shape (R, R), float64
        ``log10(counts_ij / ((V_i + V_j) / 2))`` where ``counts_ij > 0``; 0 where ``counts_ij == 0``;
        NaN where a count is positive but both volumes are 0. Negative below one streamline per mm^3.
    """
    counts = np.asarray(counts, dtype=np.float64)
    volumes = np.asarray(volumes_mm3, dtype=np.float64)
    mean_volume = (volumes[:, None] + volumes[None, :]) / 2
    signed = np.zeros_like(counts)
    positive = counts > 0
    with np.errstate(divide="ignore"):
        signed[positive] = np.log10(counts[positive] / mean_volume[positive])
    signed[positive & (mean_volume == 0)] = np.nan
    return signed


def write_relmat(
    matrix: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    *,
    missing: np.ndarray | None = None,
    integer: bool = False,
) -> Path:
    """Write an XCP-D style relmat TSV: a ``Node`` column of names, then one column per name.

    Parameters
    ----------
    matrix : ndarray, shape (R, R)
    names : sequence of str, length R
        Parcel names in atlas index order.
    path : str or Path
        Output file (written to a temporary name, then renamed).
    missing : ndarray, shape (R,), bool, optional
        Parcels absent from the data; their rows and columns are written ``n/a``.
    integer : bool
        Write whole numbers without decimals.

    Returns
    -------
    Path
    """
    values = np.asarray(matrix, dtype=np.float64).copy()
    if missing is not None:
        values[np.asarray(missing, bool), :] = np.nan
        values[:, np.asarray(missing, bool)] = np.nan
    fmt = "{:.0f}" if integer else "{:.8g}"
    lines = ["\t".join(["Node", *names])]
    for name, row in zip(names, values, strict=True):
        lines.append("\t".join([name, *("n/a" if np.isnan(v) else fmt.format(v) for v in row)]))
    return write_text(path, "\n".join(lines) + "\n")


def _nearest_labels(atlas: np.ndarray, affine: np.ndarray, search_mm: float) -> np.ndarray:
    """Each voxel's own label, or the nearest label within ``search_mm`` if it has none; (X, Y, Z)."""
    if search_mm <= 0 or not (atlas == 0).any() or not (atlas > 0).any():
        return atlas
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    distance, nearest = ndimage.distance_transform_edt(atlas == 0, sampling=zooms, return_indices=True)
    filled = atlas[tuple(nearest)]
    return np.where(distance <= search_mm, filled, 0)
