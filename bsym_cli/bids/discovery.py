"""Input discovery with pybids: raw BIDS, fMRIPrep and QSIPrep derivatives -> validated input bundles.

Derivative datasets come from ``-d NAME=PATH`` or are found under ``BIDS_DIR/derivatives/*`` by the
``GeneratedBy[0].Name`` of their ``dataset_description.json``. Only the selected participants are
indexed, and the pybids index lives in the work directory (BIDS_DIR may be read-only). The queries are
the data file ``bsym_cli/bids/data/queries.json``; ``--bids-filter-file`` overrides them per key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from bsym_cli.bids.derivatives import sidecar_path
from bsym_cli.bids.inputs import AnatTransform, BoldRun, DwiRun, ParticipantInputs, Study
from bsym_cli.cli.config import Config
from bsym_cli.utils.errors import InputDataError, MissingInputError, NothingSelectedError
from bsym_cli.utils.logs import get_logger
from pipelines.atomic import TMP_PREFIX, waiting_lock

SPACES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")
#: Entities that identify a run across the files of one derivative (space/res/desc/suffix excluded).
RUN_ENTITIES = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction", "direction", "run", "echo")
_PIPELINES = {"fmriprep": "fmriprep", "qsiprep": "qsiprep"}
_IGNORE = ["code", "stimuli", "sourcedata", "models", "derivatives", re.compile(r"/\.")]


def default_queries() -> dict[str, dict[str, Any]]:
    """The default pybids queries (``bsym_cli/bids/data/queries.json``), without its ``_doc`` entry."""
    text = resources.files("bsym_cli.bids").joinpath("data/queries.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def find_derivatives(bids_dir: Path, given: dict[str, Path]) -> dict[str, Path]:
    """Map ``fmriprep``/``qsiprep`` to derivative folders (given ones first, then auto-discovery)."""
    found: dict[str, Path] = {}
    candidates = list(given.items())
    if (bids_dir / "derivatives").is_dir():
        candidates += [(p.name, p) for p in sorted((bids_dir / "derivatives").iterdir()) if p.is_dir()]
    for name, path in candidates:
        kind = _pipeline_of(path) or (_PIPELINES.get(name.lower()) if name in given else None)
        if name in given and not path.is_dir():
            raise MissingInputError(f"--derivatives {name}={path}: no such folder.")
        if kind and kind not in found:
            found[kind] = path
    return found


def _pipeline_of(path: Path) -> str | None:
    description = path / "dataset_description.json"
    try:
        data = json.loads(description.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    names = [g.get("Name", "") for g in data.get("GeneratedBy", [])[:1]]
    names.append(data.get("PipelineDescription", {}).get("Name", ""))
    for name in names:
        for key, kind in _PIPELINES.items():
            if key in name.lower():
                return kind
    return None


def select_subjects(bids_dir: Path, labels: tuple[str, ...]) -> list[str]:
    """Subjects of BIDS_DIR matching ``labels`` (all when empty); exit 18 if none match."""
    present = sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir())
    if not labels:
        if not present:
            raise NothingSelectedError(f"{bids_dir} has no sub-* folders; is it the dataset root?")
        return present
    missing = [label for label in labels if label not in present]
    chosen = [label for label in labels if label in present]
    if not chosen:
        raise NothingSelectedError(
            f"--participant-label {' '.join(labels)} matches no participant of {bids_dir} "
            f"(it has {', '.join(present[:10]) or 'none'}{' ...' if len(present) > 10 else ''})."
        )
    if missing:
        get_logger().warning("No data for participant(s) %s in %s; skipping them.", ", ".join(missing), bids_dir)
    return chosen


def _layout(root: Path, subjects: list[str], database_dir: Path, derivative: bool, bad_json: dict[Path, str]):
    """The pybids layout of ``root`` (selected subjects only), indexed into ``database_dir``.

    An index is reused only for the files as they are now: its folder is named after a fingerprint of
    every indexed file (path, size, modification time), so a restored, edited or added file (a confounds
    table, a corrected sidecar) gives a new index. An index is built, under a lock, in a temporary folder
    renamed into place when complete, so a run killed while indexing never leaves one that a later run
    would trust (the next build removes it). Indexes of the same datasets unused for :data:`STALE_INDEX_S`
    are removed.

    JSON files that do not parse (pybids would stop the whole index on the first) are left out of the
    index and added to ``bad_json`` (path -> parser message); one outside the participants' folders
    stops the run (exit 65).
    """
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    fingerprint, malformed = _scan_dataset(root, subjects)
    for path, error in malformed.items():
        if not path.relative_to(root).parts[0].startswith("sub-"):
            raise InputDataError(
                f"{path}: not valid JSON ({error}); it applies to every participant of {root}. "
                "Fix its syntax (e.g. with `python -m json.tool`) or restore the original."
            )
        get_logger().warning(
            "%s: not valid JSON (%s); left out of the index. Fix its syntax or restore the original.", path, error
        )
    bad_json.update(malformed)
    keep = "|".join(re.escape(s) for s in subjects)
    ignore = [
        *_IGNORE,
        re.compile(rf"^/sub-(?!(?:{keep})(?:/|$))"),
        *(re.compile("^" + re.escape("/" + path.relative_to(root).as_posix()) + "$") for path in malformed),
    ]
    config = ["bids", "derivatives"] if derivative else ["bids"]
    selection = hashlib.sha256(f"{root.resolve()}|{','.join(subjects)}|{derivative}".encode()).hexdigest()[:12]
    database = database_dir / f"{root.name}-{selection}-{fingerprint}"
    if not database.is_dir():
        with waiting_lock(database_dir / ".bsym-index.lock", f"the pybids index in {database_dir}"):
            for unfinished in database_dir.glob(f"{TMP_PREFIX}*"):  # left by killed runs: no one else builds now
                shutil.rmtree(unfinished, ignore_errors=True)
            if not database.is_dir():  # a concurrent run may have built the same index while this one waited
                staging = database_dir / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{database.name}"
                BIDSLayout(
                    root,
                    validate=False,
                    is_derivative=derivative,
                    config=config,
                    indexer=BIDSLayoutIndexer(validate=False, ignore=ignore),
                    database_path=staging,
                )
                os.rename(staging, database)
            _remove_stale_indexes(database_dir, f"{root.name}-{selection}-", keep=database)
    with contextlib.suppress(OSError):
        os.utime(database)
    return BIDSLayout(root, validate=False, is_derivative=derivative, config=config, database_path=database)


#: Seconds after which an index of the same datasets that no run used is removed.
STALE_INDEX_S = 3600


def _scan_dataset(root: Path, subjects: list[str]) -> tuple[str, dict[Path, str]]:
    """One walk over what pybids indexes under ``root``.

    Returns
    -------
    fingerprint : str
        Hash of the path, size and modification time of every file.
    malformed : dict of Path to str
        JSON files that do not parse, with the parser's message.
    """
    skipped = {name for name in _IGNORE if isinstance(name, str)}
    digest = hashlib.sha256()
    malformed: dict[Path, str] = {}
    for folder, dirs, files in os.walk(root):
        relative = Path(folder).relative_to(root)
        top = not relative.parts
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and not (top and (d in skipped or (d.startswith("sub-") and d[4:] not in subjects)))
        )
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder) / name
            try:
                stat = os.stat(path)
                if name.endswith(".json"):
                    json.loads(path.read_bytes())
            except OSError:  # a broken link: pybids skips it too
                continue
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                malformed[path] = str(exc)
            digest.update(f"{relative / name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16], malformed


def _remove_stale_indexes(database_dir: Path, prefix: str, keep: Path) -> None:
    """Remove other indexes of the same selection once no run has used them for :data:`STALE_INDEX_S`."""
    now = time.time()
    for folder in database_dir.glob(f"{prefix}*"):
        if folder != keep and now - folder.stat().st_mtime > STALE_INDEX_S:
            shutil.rmtree(folder, ignore_errors=True)


def _apply_filters(entities: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    from bids.layout import Query

    out = dict(entities)
    for key, value in overrides.items():
        out[key] = Query.NONE if value is None else Query.ANY if value == "*" else value
    return out


def discover(config: Config) -> Study:
    """Index the datasets and build one :class:`ParticipantInputs` per participant and session.

    Raises exit 66 when the fMRI stage is requested and no fMRIPrep derivatives exist, and exit 18
    when the filters leave no data at all. Validation of file contents is :func:`validate`'s job.
    """
    ex, wf = config.execution, config.workflow
    log = get_logger()
    bids_dir = Path(ex.bids_dir)
    derivatives = find_derivatives(bids_dir, dict(ex.derivatives))
    if "fmri" not in wf.skip and "fmriprep" not in derivatives and ex.analysis_level == "participant":
        raise MissingInputError(
            f"No fMRIPrep derivatives found (looked under {bids_dir / 'derivatives'} for a dataset whose "
            "dataset_description.json has GeneratedBy Name fMRIPrep). Pass -d fmriprep=/path/to/fmriprep, "
            "or --skip fmri to run only the diffusion stage."
        )
    for kind, path in derivatives.items():
        log.info("Using %s derivatives: %s", kind, path)
    subjects = select_subjects(bids_dir, ex.participant_label)
    if not ex.skip_bids_validation:
        from bsym_cli.bids.validate import validate_bids_names

        validate_bids_names(bids_dir, subjects)
    database_dir = Path(ex.bids_database_dir or Path(ex.work_dir) / "bids_db")
    database_dir.mkdir(parents=True, exist_ok=True)
    bad_json: dict[Path, str] = {}
    layouts = {"raw": _layout(bids_dir, subjects, database_dir, derivative=False, bad_json=bad_json)}
    for kind, path in derivatives.items():
        layouts[kind] = _layout(path, subjects, database_dir, derivative=True, bad_json=bad_json)
    queries = default_queries()
    for query in queries.values():  # null in the defaults: the entity must be absent, as in a filter file
        query["entities"] = _apply_filters({}, query["entities"])
    for key, overrides in ex.bids_filters.items():
        queries[key]["entities"] = _apply_filters(queries[key]["entities"], overrides)

    def get(key: str, **entities: Any) -> list[Any]:
        query = queries[key]
        layout = layouts.get(query["scope"])
        if layout is None:
            return []
        return layout.get(**{**query["entities"], **entities})

    participants = []
    for subject in subjects:
        sessions = layouts["raw"].get_sessions(subject=subject) or [None]
        if ex.session_label:
            sessions = [s for s in sessions if s in ex.session_label]
        for session in sessions:
            part = ParticipantInputs(subject=subject, session=session)
            scope: dict[str, Any] = {"subject": subject}
            if session:
                scope["session"] = session
            if ex.task_id:
                scope_bold = {**scope, "task": list(ex.task_id)}
            else:
                scope_bold = scope
            if "fmri" not in wf.skip:
                part.bold_runs = [_bold_run(f, get, bad_json) for f in get("bold", **scope_bold)]
            if "dmri" not in wf.skip:
                part.dwi_runs = _dwi_runs(get, scope)
            t1w = get("t1w", **scope)
            part.t1w = Path(t1w[0].path) if t1w else None
            part.anat_transforms = _anat_transforms(get, subject, session)
            reference, mask = get("anat_reference", subject=subject), get("anat_mask", subject=subject)
            part.anat_reference = Path(reference[0].path) if reference else None
            part.anat_mask = Path(mask[0].path) if mask else None
            participants.append(part)
    if not any(p.bold_runs or p.dwi_runs for p in participants):
        filters = ex.task_id or ex.session_label or ex.bids_filters
        message = (
            f"No BOLD or DWI data found for participant(s) {', '.join(subjects)}"
            + (" with the given filters (--task-id/--session-label/--bids-filter-file)" if filters else "")
            + ". Check the filters, and that fMRIPrep/QSIPrep outputs are in BIDS_DIR/derivatives or given "
            "with -d."
        )
        raise (NothingSelectedError if filters else MissingInputError)(message)
    return Study(bids_dir=bids_dir, derivatives=derivatives, participants=participants)


def _match(entities: dict[str, Any]) -> dict[str, Any]:
    from bids.layout import Query

    return {k: entities.get(k, Query.NONE) for k in RUN_ENTITIES}


def _bold_run(bold, get, bad_json: dict[Path, str]) -> BoldRun:
    ents = bold.get_entities()
    same_run = _match(ents)
    same_space = {**same_run, "space": ents.get("space")}
    if "resolution" in ents:
        same_space["resolution"] = ents["resolution"]
    masks = get("boldmask", **same_space)
    refs = get("boldref", **same_space)
    confounds = get("confounds", **same_run)
    t_r, t_r_problem = repetition_time(bold.get_metadata().get("RepetitionTime"))
    sidecar = sidecar_path(bold.path)
    if sidecar in bad_json:
        t_r_problem = (
            f"not valid JSON ({bad_json[sidecar]}), so its RepetitionTime cannot be read; fix its syntax "
            "or restore fMRIPrep's sidecar"
        )
    return BoldRun(
        bold=Path(bold.path),
        mask=Path(masks[0].path) if masks else None,
        boldref=Path(refs[0].path) if refs else None,
        confounds=Path(confounds[0].path) if confounds else None,
        t_r=t_r,
        space=str(ents.get("space")),
        entities={k: str(v) for k, v in ents.items() if k not in ("extension",)},
        t_r_problem=t_r_problem,
    )


def repetition_time(value: Any) -> tuple[float | None, str | None]:
    """``RepetitionTime`` of a sidecar as seconds, or None and what is wrong with it.

    BIDS stores it as a JSON number; a string (even ``"2.0"``), zero, a negative or a non-finite value is
    refused rather than guessed at. Absent gives (None, None).
    """
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, (
            f"RepetitionTime is {json.dumps(value)}, not a number; write it as a JSON number of "
            'seconds (e.g. "RepetitionTime": 2.0, no quotes)'
        )
    if not math.isfinite(value) or value <= 0:
        return None, f"RepetitionTime is {value}; it must be a positive number of seconds"
    return float(value), None


def _dwi_runs(get, scope: dict[str, Any]) -> list[DwiRun]:
    """QSIPrep series when there are any (preferred), else the raw BIDS ones."""
    runs = []
    for dwi in get("qsiprep_dwi", **scope):
        ents = dwi.get_entities()
        masks = get("qsiprep_mask", **{**_match(ents), "space": ents.get("space")})
        runs.append(_dwi_run(dwi, Path(masks[0].path) if masks else None, "qsiprep"))
    return runs or [_dwi_run(dwi, None, "raw") for dwi in get("dwi", **scope)]


def _anat_transforms(get, subject: str, session: str | None) -> list[AnatTransform]:
    """Template-to-anatomy transforms of ``subject`` (QSIPrep's first, then fMRIPrep's): the session's own, or
    the subject's longitudinal ones (no ``ses`` entity), which serve every session."""
    from bids.layout import Query

    found = []
    for key in ("qsiprep_xfm", "fmriprep_xfm"):
        for ses in ([session] if session else []) + [Query.NONE]:
            for xfm in get(key, subject=subject, session=ses):
                ents = xfm.get_entities()
                if ents.get("from") and ents.get("to"):
                    found.append(AnatTransform(str(ents["from"]), str(ents["to"]), Path(xfm.path)))
    return list(dict.fromkeys(found))


def _dwi_run(dwi, mask: Path | None, source: Literal["raw", "qsiprep"]) -> DwiRun:
    ents = {k: str(v) for k, v in dwi.get_entities().items() if k != "extension"}
    return DwiRun(
        dwi=Path(dwi.path),
        bval=_sibling(dwi.path, ".bval"),
        bvec=_sibling(dwi.path, ".bvec"),
        mask=mask,
        source=source,
        entities=ents,
    )


def _sibling(path: str, extension: str) -> Path | None:
    """The file beside ``path`` with ``extension`` (BIDS inheritance is not used for gradients)."""
    stem = re.sub(r"\.nii(\.gz)?$", "", path)
    candidate = Path(stem + extension)
    return candidate if candidate.exists() else None


def choose_spaces(runs: list[BoldRun], preferred: list[str]) -> list[BoldRun]:
    """Keep one output space per BOLD run: the first of ``preferred`` (the atlas's templates) present.

    fMRIPrep often writes a run in several spaces; parcellating all of them would give duplicate
    model inputs.
    """
    order = [*preferred, *SPACES]
    by_run: dict[tuple, list[BoldRun]] = {}
    for run in runs:
        key = tuple(run.entities.get(k) for k in RUN_ENTITIES)
        by_run.setdefault(key, []).append(run)
    chosen = []
    for candidates in by_run.values():
        candidates.sort(key=lambda r: (order.index(r.space) if r.space in order else len(order), str(r.bold)))
        chosen.append(candidates[0])
    return chosen
