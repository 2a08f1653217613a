"""Per-parcel brain maps of the model's outputs: incoming attention and fusion gates, painted into the atlas."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def incoming_attention(region_map: np.ndarray) -> np.ndarray:
    """Incoming attention per parcel.

    Parameters
    ----------
    region_map : ndarray, shape (R, R)
        Directed attention, query region x key region.

    Returns
    -------
    ndarray, shape (R,)
        Column sums, normalised to sum 1 (uniform attention gives 1/R everywhere).
    """
    incoming = np.asarray(region_map, dtype=np.float64).sum(axis=0)
    return incoming / incoming.sum()


def paint_parcels(atlas_img: nib.Nifti1Image, indices: list[int], values: np.ndarray) -> nib.Nifti1Image:
    """A float32 image on the atlas grid with each parcel's voxels set to its value (0 outside parcels).

    Parameters
    ----------
    atlas_img : Nifti1Image
        Integer label image.
    indices : list of int, length R
        Atlas index of each value.
    values : ndarray, shape (R,)
    """
    labels = np.asarray(atlas_img.dataobj).astype(np.int64)
    lookup = np.zeros(max(int(labels.max()), max(indices)) + 1, np.float32)
    lookup[np.asarray(indices)] = values
    return nib.Nifti1Image(lookup[np.clip(labels, 0, None)], atlas_img.affine)
