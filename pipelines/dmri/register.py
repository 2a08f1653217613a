"""The atlas in DWI space: register the atlas's template to the subject's b0 and warp the labels.

The template (a T1 brain, e.g. MNI152 1 mm) is aligned to the masked mean b0 with DIPY: centre of mass,
translation, rigid, then affine, each by Mattes mutual information (robust to the T1/T2 contrast
difference); ``syn`` adds a diffeomorphic stage with the expectation-maximisation metric (built for
different contrasts). The labels follow with nearest-neighbour interpolation onto the DWI grid. With
``method="none"`` the DWI is taken to be in the template's space already and the labels are only resampled.
With ``method="transforms"`` the labels go through existing transform files (ITK/ANTs ``.h5`` composites or
``.txt`` affines, read by nitransforms), e.g. QSIPrep's ``from-<template>_to-ACPC`` anatomical transform of a
DWI in ACPC space; nothing is estimated. With ``method="t1w"`` (a raw DWI with fMRIPrep's or sMRIPrep's anatomy)
the labels go through the template-to-T1w transform onto the participant's T1w, and the T1w brain is aligned
to the b0 rigidly (the same head, another contrast): the chain replaces a template-to-b0 affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from dipy.align import affine_registration
from dipy.align.imaffine import AffineMap
from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
from dipy.align.metrics import EMMetric
from nibabel.spatialimages import SpatialImage

from pipelines.errors import InputDataError
from pipelines.images import load_image
from pipelines.transforms import through_transforms

METHODS = ("affine", "syn", "none", "transforms", "t1w")
#: Optimiser iterations per resolution level (coarse to fine) and the matching smoothing / shrink factors.
LEVEL_ITERS = [200, 100, 25]
SIGMAS = [3.0, 1.0, 0.0]
FACTORS = [4, 2, 1]
SYN_LEVEL_ITERS = [20, 10, 5]
#: Largest displacement of one SyN update (voxels). DIPY's 0.25 moved the labels of a synthetic head that an
#: affine had already placed (agreement 0.97 -> 0.92 on AVX-512 CPUs); 0.05-0.15 kept or improved it (0.97-0.975),
#: with twice the iterations too (tests/pipelines/dmri/test_dmri_register.py).
SYN_STEP_LENGTH = 0.1
#: Template to b0: centre of mass, then ever more degrees of freedom. The participant's T1w to b0: the same head
#: in (nearly) the same place, so one rigid fit from the scanner's alignment (a translation stage before it
#: found the same transform, within 0.01 mm, in twice the time: 50 s against 16-25 s at 2 mm).
AFFINE_PIPELINE = ["center_of_mass", "translation", "rigid", "affine"]
RIGID_PIPELINE = ["rigid"]


@dataclass
class RegistrationResult:
    """Atlas (and template) on the DWI grid, and how well they fit.

    Attributes
    ----------
    atlas_img : nibabel.Nifti1Image
        Labels on the DWI grid, shape (X, Y, Z), int32, zero outside the DWI mask.
    template_img : nibabel.Nifti1Image or None
        The template on the DWI grid (linear interpolation), shape (X, Y, Z), float32; None without one.
    metrics : dict
        ``Method``; ``Affine`` (4 x 4 world transform, DWI -> template); ``DiceBrain`` (warped template
        brain vs DWI mask; None without a template); ``RegionsPresent`` / ``RegionsTotal`` (atlas regions
        with at least one voxel inside the DWI mask); ``MutualInformation`` (affine stage, registration only).
    """

    atlas_img: nib.Nifti1Image
    template_img: nib.Nifti1Image | None
    metrics: dict = field(default_factory=dict)


def register_atlas(
    *,
    atlas_file: str | Path,
    b0_img: nib.Nifti1Image,
    mask: np.ndarray,
    template_file: str | Path | None = None,
    labels: list[int] | None = None,
    method: str = "affine",
    transforms: list[str | Path] | None = None,
    template_mask_file: str | Path | None = None,
) -> RegistrationResult:
    """Bring an atlas (defined on ``template_file``'s space) onto the DWI grid.

    Parameters
    ----------
    atlas_file : str or Path
        Atlas labels (``dseg``) in the template's space, any grid of that space, 3D.
    b0_img : nibabel.Nifti1Image
        Mean b0 of the DWI, shape (X, Y, Z).
    mask : ndarray, shape (X, Y, Z), bool
        DWI brain mask.
    template_file : str or Path, optional
        Brain-extracted template image of the atlas's space, 3D, for ``affine`` and ``syn``; the participant's
        T1w reference for ``t1w``.
    labels : list of int, optional
        Atlas indices, to count the regions that survive; default: those in the atlas image.
    method : {"affine", "syn", "none", "transforms"}
        ``none`` skips registration (the DWI is in the template's space already); ``transforms`` applies
        ``transforms``.
    template_mask_file : str or Path, optional
        Brain mask of ``template_file`` (``t1w``: fMRIPrep's ``desc-brain_mask``); the image is masked with it.
    transforms : list of str or Path, optional
        With ``method="transforms"`` or ``"t1w"``: transform files that resample an image of the atlas's space onto the
        DWI's space, in the order antsApplyTransforms takes them (the last one is applied to the image first).

    Returns
    -------
    RegistrationResult
    """
    if method not in METHODS:
        raise ValueError(f"unknown registration {method!r}; use one of {METHODS}")
    if template_file is None and method in ("affine", "syn", "t1w"):
        raise ValueError(f"registration {method!r} needs template_file (the template, or the T1w for 't1w')")
    if method in ("transforms", "t1w") and not transforms:
        raise ValueError(f"registration {method!r} needs transform files")
    atlas_img = _load_3d(atlas_file, "atlas")
    template_img = _load_3d(template_file, "template") if template_file is not None else None
    if template_img is not None and template_mask_file is not None:
        brain = np.asarray(_load_3d(template_mask_file, "brain mask").dataobj) > 0
        template_img = nib.Nifti1Image(np.asarray(template_img.dataobj, np.float32) * brain, template_img.affine)
    if method == "transforms" and transforms:
        atlas_img = through_transforms(atlas_img, transforms, b0_img)
    atlas_data = np.asarray(atlas_img.dataobj).astype(np.int32)
    static = np.asarray(b0_img.dataobj, dtype=np.float64) * mask
    static_affine = b0_img.affine
    metrics: dict = {"Method": method}
    transform = np.eye(4)
    # template_img is None only with method "none" or "transforms" (refused above otherwise)
    if method in ("affine", "syn", "t1w") and template_img is not None:
        moving = np.asarray(template_img.dataobj, dtype=np.float64)
        _, transform, _, neg_mi = affine_registration(
            moving,
            static,
            moving_affine=template_img.affine,
            static_affine=static_affine,
            pipeline=RIGID_PIPELINE if method == "t1w" else AFFINE_PIPELINE,
            level_iters=LEVEL_ITERS,
            sigmas=SIGMAS,
            factors=FACTORS,
            static_mask=mask.astype(np.int32),
            ret_metric=True,
            nbins=32,
        )
        metrics["MutualInformation"] = round(float(-neg_mi), 6)
    atlas_transform = transform
    if method == "t1w" and transforms:
        # one resampling: a DWI point goes to the T1w (the rigid fit), then to the template (the anatomy's file)
        atlas_img = through_transforms(atlas_img, [*transforms, transform], b0_img)
        atlas_data, atlas_transform = np.asarray(atlas_img.dataobj).astype(np.int32), np.eye(4)
    warped_atlas: np.ndarray
    warped_template: np.ndarray | None
    if method == "syn" and template_img is not None:
        warped_atlas, warped_template = _syn(static, static_affine, template_img, atlas_img, transform)
    else:
        warped_atlas = _affine_map(atlas_transform, static, static_affine, atlas_img).transform(
            atlas_data, interpolation="nearest"
        )
        warped_template = (
            None
            if template_img is None
            else _affine_map(transform, static, static_affine, template_img).transform(
                np.asarray(template_img.dataobj, dtype=np.float64), interpolation="linear"
            )
        )
    warped_atlas = np.rint(warped_atlas).astype(np.int32) * mask
    present = set(np.unique(warped_atlas[warped_atlas > 0]).tolist())
    wanted = (
        [int(v) for v in labels] if labels is not None else sorted(set(np.unique(atlas_data[atlas_data > 0]).tolist()))
    )
    metrics.update(
        Affine=np.round(transform, 6).tolist(),
        DiceBrain=None if warped_template is None else round(_dice(_brain(warped_template), mask), 4),
        RegionsPresent=sum(label in present for label in wanted),
        RegionsTotal=len(wanted),
    )
    return RegistrationResult(
        atlas_img=nib.Nifti1Image(warped_atlas, static_affine),
        template_img=None
        if warped_template is None
        else nib.Nifti1Image(warped_template.astype(np.float32), static_affine),
        metrics=metrics,
    )


def _affine_map(
    transform: np.ndarray, static: np.ndarray, static_affine: np.ndarray, moving_img: SpatialImage
) -> AffineMap:
    """Map from ``moving_img``'s grid onto the DWI grid through the world transform."""
    return AffineMap(
        transform,
        domain_grid_shape=static.shape,
        domain_grid2world=static_affine,
        codomain_grid_shape=moving_img.shape,
        codomain_grid2world=moving_img.affine,
    )


def _syn(
    static: np.ndarray,
    static_affine: np.ndarray,
    template_img: SpatialImage,
    atlas_img: SpatialImage,
    prealign: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Diffeomorphic refinement (EM metric) after ``prealign``; returns warped atlas and template."""
    moving = np.asarray(template_img.dataobj, dtype=np.float64)
    atlas_on_template = AffineMap(
        np.eye(4),
        domain_grid_shape=moving.shape,
        domain_grid2world=template_img.affine,
        codomain_grid_shape=atlas_img.shape,
        codomain_grid2world=atlas_img.affine,
    ).transform(np.asarray(atlas_img.dataobj).astype(np.int32), interpolation="nearest")
    syn = SymmetricDiffeomorphicRegistration(EMMetric(3), level_iters=SYN_LEVEL_ITERS, step_length=SYN_STEP_LENGTH)
    mapping = syn.optimize(
        static, moving, static_grid2world=static_affine, moving_grid2world=template_img.affine, prealign=prealign
    )
    return (
        mapping.transform(atlas_on_template, interpolation="nearest"),
        mapping.transform(moving, interpolation="linear"),
    )


def _brain(image: np.ndarray) -> np.ndarray:
    """Voxels above 10 percent of the 95th percentile of the positive values; (X, Y, Z) -> bool."""
    positive = image[image > 0]
    return image > 0.1 * np.percentile(positive, 95) if positive.size else np.zeros(image.shape, bool)


def _load_3d(path: str | Path, kind: str) -> SpatialImage:
    img = load_image(path)
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if img.ndim != 3:
        raise InputDataError(f"{path}: the {kind} must be a 3D image but has shape {img.shape}.")
    return img


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / total) if total else 0.0
