"""Where the atlas goes on a diffusion series: chosen from the DWI's space, logged, and recorded in the sidecars.

- **Template space** (a QSIPrep DWI with ``space-<template>``): the atlas image of that template, resampled to the
  DWI grid with nearest neighbour; no registration.
- **The participant's anatomical space** (QSIPrep ``space-ACPC``, or ``space-T1w``): the atlas goes through the
  existing ``*_from-<template>_to-<space>_mode-image_xfm.h5`` transform of QSIPrep, fMRIPrep or sMRIPrep
  (nitransforms), for a template the atlas has an image of; nothing is estimated.
- **Raw DWI with fMRIPrep's (or sMRIPrep's) anatomy** (a T1w reference and its ``from-<template>_to-T1w``
  transform): the atlas goes through that transform onto the T1w, and the T1w is aligned rigidly to the mean b0.
- **Anything else** (raw BIDS DWI without anatomy, or an anatomical space without its transform): the template is
  registered to the mean b0 (``--registration``, affine by default) and the parcels are approximate, which the
  log and the report say.

``--force-atlas-space`` lets a template-space DWI use another template's image when its own is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsym_cli.bids.atlases import Atlas
from bsym_cli.bids.inputs import AnatTransform, BoldRun, DwiRun, ParticipantInputs
from bsym_cli.bids.templates import REGISTRATION_TEMPLATE, template_transform
from bsym_cli.cli.config import WorkflowConfig

#: Spaces of a participant's own anatomy (QSIPrep writes ACPC; fMRIPrep and sMRIPrep write T1w)
ANATOMICAL_SPACES = ("ACPC", "T1w", "anat", "dwi", "orig")


@dataclass(frozen=True)
class Placement:
    """How the atlas is placed on one BOLD or diffusion series.

    Attributes
    ----------
    method : {"template-space", "template-transform", "anatomical-transform", "anatomical-chain", "registration"}
    space : str
        The data's space: a template name, ``ACPC``/``T1w``, or ``native`` for a raw DWI.
    atlas_image : Path
        The atlas image resampled (or registered) onto the DWI grid.
    atlas_space : str
        Template of ``atlas_image``.
    registration : {"affine", "syn", "none", "transforms"}
        Registration of the template to the b0 ("none": resampling only; "transforms": existing transforms).
    transforms : tuple of Path
        Transform files applied to the atlas, in antsApplyTransforms order.
    reference, reference_mask : Path or None
        The T1w (and its brain mask) aligned rigidly to the b0, for ``anatomical-chain``.
    warning : str or None
        Why the parcels are approximate, if they are.
    """

    method: str
    space: str
    atlas_image: Path
    atlas_space: str
    registration: str
    transforms: tuple[Path, ...] = ()
    reference: Path | None = None
    reference_mask: Path | None = None
    warning: str | None = field(default=None, compare=False)

    def sidecar(self) -> dict[str, Any]:
        """``AtlasPlacement`` for the connectome sidecars."""
        record: dict[str, Any] = {
            "Method": self.method,
            "DataSpace": self.space,
            "AtlasSpace": self.atlas_space,
            "AtlasImage": self.atlas_image.name,
            "Registration": self.registration,
            "Transforms": [t.name for t in self.transforms],
            **({"AnatomicalReference": self.reference.name} if self.reference else {}),
        }
        if self.warning:
            record["Warning"] = self.warning
        return {"AtlasPlacement": record}

    def describe(self) -> str:
        """One line for the log and the report."""
        if self.method == "template-transform":
            names = ", ".join(t.name for t in self.transforms)
            return f"BOLD in {self.space}: the {self.atlas_space} atlas image through TemplateFlow's {names}"
        if self.method == "template-space":
            return f"Data in {self.space}: the {self.atlas_space} atlas image resampled to its grid, no registration"
        if self.method == "anatomical-chain" and self.reference is not None:
            names = ", ".join(t.name for t in self.transforms)
            return (
                f"raw DWI: the {self.atlas_space} atlas image through {names} onto {self.reference.name}, "
                "aligned rigidly to the mean b0"
            )
        if self.method == "anatomical-transform":
            names = ", ".join(t.name for t in self.transforms)
            return f"DWI in {self.space}: the {self.atlas_space} atlas image through {names}, no registration"
        return (
            f"DWI in {self.space} space: {self.registration} registration of the {REGISTRATION_TEMPLATE} "
            "template to the mean b0"
        )


def dwi_space(run: DwiRun) -> str:
    """The space of a diffusion series: its ``space`` entity, or ``native`` for a raw series."""
    return run.entities.get("space") or ("native" if run.source == "raw" else "T1w")


def place_atlas(run: DwiRun, atlas: Atlas, wf: WorkflowConfig, part: ParticipantInputs | None = None) -> Placement:
    """Choose how ``atlas`` goes on ``run`` from the DWI's space (see the module docstring).

    ``part`` brings the participant's anatomy: template-to-anatomy transforms (QSIPrep's first) and fMRIPrep's
    T1w reference.
    """
    anat_transforms: Sequence[AnatTransform] = part.anat_transforms if part else ()
    space = dwi_space(run)
    if space not in ANATOMICAL_SPACES and space != "native":
        image = atlas.image_for(space, force=wf.force_atlas_space)
        used = space if space in atlas.images else _space_of(atlas, image)
        return Placement("template-space", space, image, used, "none")
    usable = [t for t in anat_transforms if t.space == space and t.template in atlas.images]
    if usable:
        chosen = usable[0]
        image = atlas.image_for(chosen.template)
        return Placement("anatomical-transform", space, image, chosen.template, "transforms", (chosen.path,))
    to_t1w = [t for t in anat_transforms if t.space == "T1w" and t.template in atlas.images]
    if space == "native" and wf.registration != "none" and part and part.anat_reference and to_t1w:
        chosen = to_t1w[0]
        image = atlas.image_for(chosen.template)
        return Placement(
            "anatomical-chain",
            space,
            image,
            chosen.template,
            "t1w",
            (chosen.path,),
            reference=part.anat_reference,
            reference_mask=part.anat_mask,
        )
    image = atlas.image_for(REGISTRATION_TEMPLATE, force=wf.force_atlas_space)
    warning = None
    if wf.registration != "none":
        warning = (
            f"the atlas is placed on the {space} DWI by {wf.registration} registration of a T1 template to the "
            "mean b0; cortical parcels are approximate (by millimetres). A DWI already in a template space "
            "(space-<template>) is placed without registration."
        )
    return Placement("registration", space, image, _space_of(atlas, image), wf.registration, warning=warning)


def _space_of(atlas: Atlas, image: Path) -> str:
    for template, by_res in atlas.images.items():
        if image in by_res.values():
            return template
    return REGISTRATION_TEMPLATE


def place_atlas_on_bold(run: BoldRun, atlas: Atlas, wf: WorkflowConfig) -> Placement:
    """The atlas image for a BOLD run: the one of the BOLD's own template; else another template's image through
    TemplateFlow's template-to-template transform (exit 66 naming it if not fetched); else, with
    ``--force-atlas-space``, another template's image as is; else exit 64 with the fix."""
    if run.space in atlas.images:
        return Placement("template-space", run.space, atlas.image_for(run.space), run.space, "none")
    if not wf.force_atlas_space:
        for template in sorted(atlas.images):
            transform = template_transform(template, run.space)
            if transform is not None:
                image = atlas.image_for(template)
                return Placement("template-transform", run.space, image, template, "transforms", (transform,))
    image = atlas.image_for(run.space, force=wf.force_atlas_space)  # exit 64 with the fix unless forced
    warning = f"--force-atlas-space: the {_space_of(atlas, image)} atlas image is used as is on {run.space} data"
    return Placement("template-space", run.space, image, _space_of(atlas, image), "none", warning=warning)
