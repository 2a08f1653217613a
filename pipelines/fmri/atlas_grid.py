"""The atlas on the BOLD grid: nearest-neighbour resampling of a label image, cached per grid.

An atlas (``dseg``) comes in the BOLD's template space but usually on another grid (1 mm atlas, 2 mm BOLD).
:func:`resample_labels_nearest` puts it on the BOLD grid by looking up, for every BOLD voxel centre, the atlas
voxel that contains it (nearest neighbour, so labels are never blended). :func:`atlas_on_grid` does this once
per (atlas, grid) pair and keeps the result in a cache folder, so every run on the same grid reuses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from filelock import FileLock
from nibabel.spatialimages import SpatialImage

from pipelines.atomic import atomic_path
from pipelines.errors import InputDataError
from pipelines.fingerprint import code_fingerprint
from pipelines.images import load_image
from pipelines.transforms import through_transforms

#: Two affines closer than this (in mm, element-wise) describe the same grid.
AFFINE_ATOL_MM = 1e-4


def resample_labels_nearest(
    atlas_img: SpatialImage, shape: tuple[int, int, int], affine: np.ndarray
) -> nib.Nifti1Image:
    """Resample an integer label image onto another grid with nearest-neighbour lookup.

    Parameters
    ----------
    atlas_img : SpatialImage
        3D label image (e.g. a Nifti1Image); 0 is background.
    shape : tuple of 3 int
        Target grid shape (X, Y, Z), in voxels.
    affine : ndarray, shape (4, 4)
        Target voxel-to-world affine, in mm.

    Returns
    -------
    Nifti1Image
        int32 labels of shape ``shape`` with ``affine``; target voxels whose centre falls outside the atlas
        get 0.
    """
    labels = _integer_labels(atlas_img)
    target_to_atlas = np.linalg.inv(atlas_img.affine) @ np.asarray(affine, dtype=float)
    out = np.zeros(shape, dtype=np.int32)
    ijk = np.indices(shape[1:], dtype=float).reshape(2, -1)  # (2, Y*Z): j, k of one x-slab
    for x in range(shape[0]):  # one slab at a time keeps memory at O(Y*Z)
        coords = np.vstack([np.full(ijk.shape[1], float(x)), ijk, np.ones(ijk.shape[1])])
        src = np.rint(target_to_atlas[:3] @ coords).astype(np.int64)  # (3, Y*Z) atlas voxel indices
        inside = np.all((src >= 0) & (src < np.array(labels.shape)[:, None]), axis=0)
        slab = np.zeros(ijk.shape[1], dtype=np.int32)
        slab[inside] = labels[src[0, inside], src[1, inside], src[2, inside]]
        out[x] = slab.reshape(shape[1:])
    img = nib.Nifti1Image(out, affine)
    img.set_data_dtype(np.int32)
    return img


def atlas_on_grid(
    atlas_dseg: str | Path,
    reference_img: str | Path,
    *,
    cache_dir: str | Path,
    transforms: Sequence[str | Path] = (),
) -> Path:
    """Return the atlas resampled to the grid of ``reference_img``, computing it once per grid.

    Parameters
    ----------
    atlas_dseg : str or Path
        The atlas label image (``*_dseg.nii.gz``) in the reference's template space.
    reference_img : str or Path
        Any image on the target grid (the BOLD series or its mask); only its header is read.
    cache_dir : str or Path
        Folder of cached atlases (the work directory); created if absent. Safe for concurrent runs.
    transforms : sequence of str or Path
        When the atlas is in another template than the reference: TemplateFlow's transform files from the
        atlas's template to the reference's (antsApplyTransforms order), applied in the same resampling.

    Returns
    -------
    Path
        ``<cache_dir>/atlas-<hash>_grid-<hash>_code-<hash>_dseg.nii.gz``, int32 labels on the reference grid
        (the last hash is this module's code fingerprint: an upgrade does not reuse an older cached atlas). When
        the atlas is already on that grid it is still copied there as int32, so callers see one format.
    """
    atlas_dseg, reference_img = Path(atlas_dseg), Path(reference_img)
    reference = load_image(reference_img)
    if reference.ndim < 3:
        raise InputDataError(
            f"{reference_img}: expected a 3D or 4D image on the BOLD grid, got shape {reference.shape}."
        )
    shape = (int(reference.shape[0]), int(reference.shape[1]), int(reference.shape[2]))
    affine = reference.affine
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    via = "".join(f"_via-{_file_digest(Path(t))}" for t in transforms)
    grid, code = _grid_digest(shape, affine), code_fingerprint(__name__)
    target = cache_dir / f"atlas-{_file_digest(atlas_dseg)}{via}_grid-{grid}_code-{code}_dseg.nii.gz"
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            atlas = load_image(atlas_dseg)
            if atlas.ndim != 3:
                raise InputDataError(
                    f"{atlas_dseg}: an atlas must be a 3D label image, this one has shape {atlas.shape}; "
                    "pass a dseg image (one integer label per voxel), not probabilistic maps."
                )
            if transforms:
                resampled = through_transforms(atlas, transforms, reference)
                resampled.set_data_dtype(np.int32)
            elif atlas.shape == shape and np.allclose(atlas.affine, affine, atol=AFFINE_ATOL_MM):
                resampled = nib.Nifti1Image(_integer_labels(atlas), affine)
                resampled.set_data_dtype(np.int32)
            else:
                resampled = resample_labels_nearest(atlas, shape, affine)
            with atomic_path(target) as tmp:
                resampled.to_filename(tmp)
    return target


def _integer_labels(atlas_img: SpatialImage) -> np.ndarray:
    """Labels as int32, refusing non-integer values (a probabilistic or interpolated atlas)."""
    data = np.asarray(atlas_img.dataobj)
    labels = np.rint(data).astype(np.int32)
    if not np.allclose(data, labels, atol=1e-3):
        name = atlas_img.get_filename() or "the atlas"
        raise InputDataError(
            f"{name}: the atlas holds non-integer values (e.g. {data[data != labels].flat[0]!r}); a dseg must "
            "hold integer labels. Use the atlas's dseg image, not an interpolated or probabilistic one."
        )
    return labels


def _file_digest(path: Path) -> str:
    """First 12 hex digits of the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _grid_digest(shape: tuple[int, ...], affine: np.ndarray) -> str:
    """First 12 hex digits of a hash of a grid (shape and affine rounded to 1e-4 mm)."""
    rounded = np.round(np.asarray(affine, dtype=float), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
    text = repr((shape, rounded.tolist()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
