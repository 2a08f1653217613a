"""What a run works on: the inputs found for each participant, and what is wrong with them.

Discovery (``bsym_cli/bids/discovery.py``) fills these; validation (``bsym_cli/bids/validate.py``) checks them;
the levels (``bsym_cli/levels/``) run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input; ``missing`` distinguishes exit 66 from exit 65."""

    message: str
    missing: bool = False


@dataclass(frozen=True)
class BoldRun:
    """One preprocessed BOLD run and its companions (None where absent)."""

    bold: Path
    mask: Path | None
    boldref: Path | None
    confounds: Path | None
    t_r: float | None
    space: str
    entities: dict[str, str] = field(hash=False)
    #: Why ``t_r`` is None when the sidecar has a RepetitionTime that is not a positive number of seconds.
    t_r_problem: str | None = None


@dataclass(frozen=True)
class DwiRun:
    """One diffusion series: raw BIDS or QSIPrep-preprocessed."""

    dwi: Path
    bval: Path | None
    bvec: Path | None
    mask: Path | None
    source: Literal["raw", "qsiprep"]
    entities: dict[str, str] = field(hash=False)


@dataclass(frozen=True)
class AnatTransform:
    """A transform file that resamples an image in ``template`` into the participant's anatomical ``space``
    (``*_from-<template>_to-<space>_mode-image_xfm.h5`` of QSIPrep, fMRIPrep or sMRIPrep)."""

    template: str
    space: str
    path: Path


@dataclass
class ParticipantInputs:
    """Everything found for one participant (and session), and what was wrong with it."""

    subject: str
    session: str | None
    bold_runs: list[BoldRun] = field(default_factory=list)
    dwi_runs: list[DwiRun] = field(default_factory=list)
    t1w: Path | None = None
    anat_transforms: list[AnatTransform] = field(default_factory=list)
    anat_reference: Path | None = None  # fMRIPrep's T1w reference, the space of its ``to-T1w`` transforms
    anat_mask: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``sub-01`` or ``sub-01_ses-a``."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def usable(self) -> bool:
        """True when at least one BOLD or DWI run is left."""
        return bool(self.bold_runs or self.dwi_runs)


@dataclass
class Study:
    """The datasets in play and the participants selected."""

    bids_dir: Path
    derivatives: dict[str, Path]
    participants: list[ParticipantInputs]
    #: What validation found wrong; the run ends with their exit code.
    problems: list[Problem] = field(default_factory=list)
