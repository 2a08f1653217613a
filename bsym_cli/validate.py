"""Validation of the discovered inputs before any work: each problem names the file and the fix.

A run with a problem is dropped (with a warning); a participant left with nothing is skipped; the
whole run exits 65 (malformed data) or 66 (missing input) only when nobody is left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bsym_cli.discovery import BoldRun, DwiRun, ParticipantInputs, Study
from bsym_cli.errors import InputDataError, InvalidBIDSError, MissingInputError
from bsym_cli.logs import get_logger


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input; ``missing`` distinguishes exit 66 from exit 65."""

    message: str
    missing: bool = False


def count_nonfinite(path: Path) -> int:
    """Number of NaN/inf values stored in the image (0 for integer types, which cannot hold them)."""
    import nibabel as nib

    from pipelines.niftistream import iter_raw_values

    header = nib.load(path).header
    slope, inter = header.get_slope_inter()
    if any(v is not None and not np.isfinite(v) for v in (slope, inter)):
        return -1
    if header.get_data_dtype().kind not in "fc":
        return 0
    return int(sum(np.count_nonzero(~np.isfinite(values)) for values in iter_raw_values(path)))


def _image_problem(path: Path, *, ndim: int | None = None, what: str) -> Problem | None:
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        return Problem(f"{path}: cannot be read as NIfTI ({exc}); re-export the {what}.")
    if ndim is not None and img.ndim != ndim:
        return Problem(f"{path}: the {what} is {img.ndim}-D {img.shape}, expected {ndim}-D; "
                       f"check that the right file is selected.")
    bad = count_nonfinite(path)
    if bad:
        amount = "a non-finite scaling factor" if bad < 0 else f"{bad} non-finite values (NaN/inf)"
        return Problem(f"{path}: the {what} has {amount}; rerun the preprocessing or fix the file.")
    return None


def check_bold_run(run: BoldRun) -> list[Problem]:
    """Problems of one BOLD run: missing confounds/mask, 3-D data, no RepetitionTime, non-finite data."""
    problems = []
    if run.confounds is None:
        problems.append(Problem(f"{run.bold}: no matching *_desc-confounds_timeseries.tsv; copy fMRIPrep's "
                                "confounds next to the BOLD, or rerun fMRIPrep.", missing=True))
    if run.mask is None:
        problems.append(Problem(f"{run.bold}: no brain mask (*_space-{run.space}_desc-brain_mask.nii.gz) "
                                "in the same space; rerun fMRIPrep with this output space.", missing=True))
    if run.t_r is None:
        problems.append(Problem(f"{run.bold}: no RepetitionTime in its JSON sidecar; add it (seconds) "
                                "or restore fMRIPrep's sidecar."))
    problem = _image_problem(run.bold, ndim=4, what="BOLD series")
    if problem:
        problems.append(problem)
    if run.mask is not None:
        problem = _image_problem(run.mask, ndim=3, what="brain mask")
        if problem:
            problems.append(problem)
    return problems


def check_dwi_run(run: DwiRun) -> list[Problem]:
    """Problems of one DWI series: missing gradients, count mismatches, bad vectors, non-finite data."""
    problems = []
    for path, ext in ((run.bval, ".bval"), (run.bvec, ".bvec")):
        if path is None:
            problems.append(Problem(f"{run.dwi}: no {ext} file beside it; BIDS needs "
                                    f"{run.dwi.name.split('.')[0]}{ext}.", missing=True))
    problem = _image_problem(run.dwi, ndim=4, what="diffusion series")
    if problem:
        problems.append(problem)
    if problems:
        return problems
    try:
        from pipelines.dmri.gradients import check_gradients
    except ImportError:  # pragma: no cover - the dMRI package is part of the app
        return problems
    try:
        check_gradients(run.dwi, run.bval, run.bvec)
    except ValueError as exc:
        problems.append(Problem(str(exc)))
    return problems


def _keep_valid(part: ParticipantInputs, runs: list, check, found: list[Problem]) -> list:
    """The runs ``check`` finds nothing wrong with; problems go to ``part.problems`` and ``found``."""
    kept = []
    for run in runs:
        problems = check(run)
        part.problems.extend(p.message for p in problems)
        found.extend(problems)
        if not problems:
            kept.append(run)
    return kept


def validate(study: Study) -> list[ParticipantInputs]:
    """Drop bad runs and empty participants (with warnings); return the usable participants.

    Raises
    ------
    InputDataError
        Exit 65, when nobody is left and some data were malformed.
    MissingInputError
        Exit 66, when nobody is left because required files are missing.
    """
    log = get_logger()
    usable, all_problems = [], []
    for part in study.participants:
        kept_bold = _keep_valid(part, part.bold_runs, check_bold_run, all_problems)
        kept_dwi = _keep_valid(part, part.dwi_runs, check_dwi_run, all_problems)
        for message in part.problems:
            log.warning("%s: skipping a run: %s", part.label, message)
        part.bold_runs, part.dwi_runs = kept_bold, kept_dwi
        if part.usable:
            usable.append(part)
            log.info("%s: %d BOLD run(s), %d DWI series", part.label, len(kept_bold), len(kept_dwi))
        else:
            if not part.problems:
                part.problems.append("no BOLD or DWI data found")
                all_problems.append(Problem(f"{part.label}: no BOLD or DWI data found", missing=True))
            log.warning("%s: nothing usable, skipping this participant.", part.label)
    if not usable:
        details = "\n  ".join(p.message for p in all_problems)
        error = MissingInputError if all(p.missing for p in all_problems) else InputDataError
        raise error(f"No participant has usable data:\n  {details}")
    return usable


def validate_bids_names(bids_dir: Path, subjects: list[str]) -> None:
    """Check raw file names of the selected participants against the BIDS schema (exit 16 if wrong).

    Uses the ``bids_validator`` package shipped with pybids (names only; skip with
    ``--skip-bids-validation``).
    """
    from bids_validator import BIDSValidator

    description = bids_dir / "dataset_description.json"
    try:
        data = json.loads(description.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidBIDSError(f"{description}: cannot be read as JSON ({exc}); fix it or use "
                               "--skip-bids-validation.") from None
    if "Name" not in data or "BIDSVersion" not in data:
        raise InvalidBIDSError(f"{description}: needs 'Name' and 'BIDSVersion'; add them or use "
                               "--skip-bids-validation.")
    validator = BIDSValidator()
    bad = []
    for subject in subjects:
        for path in sorted((bids_dir / f"sub-{subject}").rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                relative = "/" + path.relative_to(bids_dir).as_posix()
                if not validator.is_bids(relative):
                    bad.append(relative)
    if bad:
        shown = "\n  ".join(bad[:10]) + ("\n  ..." if len(bad) > 10 else "")
        raise InvalidBIDSError(f"{len(bad)} file(s) in {bids_dir} do not have valid BIDS names:\n  {shown}\n"
                               "Rename them, or pass --skip-bids-validation.")
