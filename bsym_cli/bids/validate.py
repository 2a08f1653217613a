"""Validation of the discovered inputs before any work: each problem names the file and the fix.

A run with a problem is dropped (with a warning); a participant left with nothing is skipped. The others
are processed, then the run exits 65 (malformed data) or 66 (missing input, when nothing was malformed)
and lists every problem again; it stops at once only when nobody is left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from bsym_cli.bids.derivatives import sidecar_path
from bsym_cli.bids.inputs import BoldRun, DwiRun, ParticipantInputs, Problem, Study
from bsym_cli.utils.errors import InputDataError, InvalidBIDSError, MissingInputError
from bsym_cli.utils.logs import get_logger


def count_nonfinite(path: Path) -> int:
    """Number of NaN/inf values stored in the image (0 for integer types, which cannot hold them).

    Raises ``ValueError`` when the file ends before its last value (a truncated copy).
    """
    import nibabel as nib

    from pipelines.niftistream import iter_raw_values

    header = nib.load(path).header
    slope, inter = header.get_slope_inter()
    if any(v is not None and not np.isfinite(v) for v in (slope, inter)):
        return -1
    if header.get_data_dtype().kind not in "fc":
        return 0
    return int(sum(np.count_nonzero(~np.isfinite(values)) for values in iter_raw_values(path)))


@dataclass(frozen=True)
class SeriesScan:
    """What one pass over a 4-D series found.

    Attributes
    ----------
    n_volumes : int
    nonfinite : int
        NaN/inf values stored.
    varying : ndarray of bool, shape (X, Y, Z)
        Voxels whose value changes over time.
    """

    n_volumes: int
    nonfinite: int
    varying: np.ndarray


def scan_series(path: Path) -> SeriesScan:
    """Read a 4-D series once, front to back: non-finite values and voxels that change over time."""
    from pipelines.niftistream import iter_volume_blocks

    low = high = None
    nonfinite = n_volumes = 0
    for _, block in iter_volume_blocks(path):
        if block.dtype.kind in "fc":
            nonfinite += int(np.count_nonzero(~np.isfinite(block)))
        block_low, block_high = np.fmin.reduce(block, axis=3), np.fmax.reduce(block, axis=3)
        low = block_low if low is None else np.fmin(low, block_low)
        high = block_high if high is None else np.fmax(high, block_high)
        n_volumes += block.shape[3]
    varying = np.zeros((0, 0, 0), bool) if low is None else high > low
    return SeriesScan(n_volumes=n_volumes, nonfinite=nonfinite, varying=varying)


def _unreadable(path: Path, what: str, exc: BaseException) -> Problem:
    return Problem(
        f"{path}: the {what} cannot be read to its end ({exc}); the file is truncated or corrupt. "
        "Copy it again from the preprocessing output."
    )


def _image_problem(path: Path, *, ndim: int | None = None, what: str) -> Problem | None:
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        return Problem(f"{path}: cannot be read as NIfTI ({exc}); re-export the {what}.")
    if ndim is not None and img.ndim != ndim:
        return Problem(
            f"{path}: the {what} is {img.ndim}-D {img.shape}, expected {ndim}-D; check that the right file is selected."
        )
    if ndim == 4:  # series are scanned by scan_series, in the same pass as their other checks
        return None
    try:
        bad = count_nonfinite(path)
    except (OSError, EOFError, ValueError) as exc:  # gzip/zlib errors are OSError or EOFError
        return _unreadable(path, what, exc)
    if bad:
        amount = "a non-finite scaling factor" if bad < 0 else f"{bad} non-finite values (NaN/inf)"
        return Problem(f"{path}: the {what} has {amount}; rerun the preprocessing or fix the file.")
    return None


def check_bold_run(run: BoldRun, *, denoise_strategy: str = "simple") -> list[Problem]:
    """Problems of one BOLD run, found before any work (each names the file and the fix).

    Missing confounds or mask; RepetitionTime absent or not a positive number; a BOLD series that is not
    4-D, truncated, non-finite, or constant over time inside the mask; a mask on another grid; a confounds
    table with the wrong row count or without the columns ``denoise_strategy`` needs.
    """
    import nibabel as nib

    from pipelines.errors import InputDataError as PipelineDataError
    from pipelines.errors import MissingInputError as PipelineMissingError
    from pipelines.fmri.denoise import check_confounds

    problems = []
    if run.confounds is None:
        problems.append(
            Problem(
                f"{run.bold}: no matching *_desc-confounds_timeseries.tsv; copy fMRIPrep's "
                "confounds next to the BOLD, or rerun fMRIPrep.",
                missing=True,
            )
        )
    if run.mask is None:
        problems.append(
            Problem(
                f"{run.bold}: no brain mask (*_space-{run.space}_desc-brain_mask.nii.gz) "
                "in the same space; rerun fMRIPrep with this output space.",
                missing=True,
            )
        )
    if run.t_r_problem is not None:
        problems.append(Problem(f"{sidecar_path(run.bold)}: {run.t_r_problem}."))
    elif run.t_r is None:
        problems.append(
            Problem(
                f"{run.bold}: no RepetitionTime in its JSON sidecar; add it (seconds) or restore fMRIPrep's sidecar."
            )
        )
    problem = _image_problem(run.bold, ndim=4, what="BOLD series")
    if problem:
        return [*problems, problem]
    try:
        scan = scan_series(run.bold)
    except (OSError, EOFError, ValueError) as exc:
        return [*problems, _unreadable(run.bold, "BOLD series", exc)]
    if scan.nonfinite:
        problems.append(
            Problem(
                f"{run.bold}: the BOLD series has {scan.nonfinite} non-finite values (NaN/inf); "
                "rerun the preprocessing or fix the file."
            )
        )
    mask = None
    if run.mask is not None:
        problem = _image_problem(run.mask, ndim=3, what="brain mask")
        if problem:
            problems.append(problem)
        else:
            bold_img, mask_img = nib.load(run.bold), nib.load(run.mask)
            if mask_img.shape != bold_img.shape[:3] or not np.allclose(mask_img.affine, bold_img.affine, atol=1e-3):
                problems.append(
                    Problem(
                        f"{run.mask}: the brain mask is on another grid (shape {mask_img.shape}) than the BOLD "
                        f"series {run.bold.name} (shape {bold_img.shape[:3]}, or a different affine); use the mask of "
                        "the same space and resolution (res- entity)."
                    )
                )
            else:
                mask = np.asarray(mask_img.dataobj) > 0
    if mask is not None and not scan.varying[mask].any():
        problems.append(
            Problem(
                f"{run.bold}: the BOLD series does not change over time in any voxel of the brain "
                "mask (a constant image, e.g. all zeros); re-export it from fMRIPrep."
            )
        )
    if run.confounds is not None:
        try:
            check_confounds(run.confounds, n_frames=scan.n_volumes, strategy=denoise_strategy)
        except PipelineMissingError as exc:
            problems.append(Problem(str(exc), missing=True))
        except PipelineDataError as exc:
            problems.append(Problem(str(exc)))
    return problems


def check_dwi_run(run: DwiRun) -> list[Problem]:
    """Problems of one DWI series: missing gradients, count mismatches, bad vectors, non-finite data."""
    problems = []
    for path, ext in ((run.bval, ".bval"), (run.bvec, ".bvec")):
        if path is None:
            problems.append(
                Problem(
                    f"{run.dwi}: no {ext} file beside it; BIDS needs {run.dwi.name.split('.')[0]}{ext}.", missing=True
                )
            )
    problem = _image_problem(run.dwi, ndim=4, what="diffusion series")
    if problem is None:
        try:
            nonfinite = scan_series(run.dwi).nonfinite
        except (OSError, EOFError, ValueError) as exc:
            problem = _unreadable(run.dwi, "diffusion series", exc)
        else:
            problem = (
                Problem(
                    f"{run.dwi}: the diffusion series has {nonfinite} non-finite values (NaN/inf); rerun "
                    "the preprocessing or fix the file."
                )
                if nonfinite
                else None
            )
    if problem:
        problems.append(problem)
    if problems:
        return problems
    from pipelines.dmri.gradients import check_gradients

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


def validate(study: Study, *, denoise_strategy: str = "simple") -> list[ParticipantInputs]:
    """Drop bad runs and empty participants (with warnings); return the usable participants.

    ``denoise_strategy`` says which confound columns every BOLD run's table must have.

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
        kept_bold = _keep_valid(
            part, part.bold_runs, partial(check_bold_run, denoise_strategy=denoise_strategy), all_problems
        )
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
    study.problems = all_problems
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
        raise InvalidBIDSError(
            f"{description}: cannot be read as JSON ({exc}); fix it or use --skip-bids-validation."
        ) from None
    if "Name" not in data or "BIDSVersion" not in data:
        raise InvalidBIDSError(
            f"{description}: needs 'Name' and 'BIDSVersion'; add them or use --skip-bids-validation."
        )
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
        raise InvalidBIDSError(
            f"{len(bad)} file(s) in {bids_dir} do not have valid BIDS names:\n  {shown}\n"
            "Rename them, or pass --skip-bids-validation."
        )
