"""Input discovery with pybids: raw BIDS, fMRIPrep and QSIPrep derivatives -> validated input bundles.

Derivative datasets come from ``-d NAME=PATH`` or are found under ``BIDS_DIR/derivatives/*`` by the
``GeneratedBy[0].Name`` of their ``dataset_description.json``. Only the selected participants are
indexed, and the pybids index lives in the work directory (BIDS_DIR may be read-only). The queries are
the data file ``bsym_cli/data/queries.json``; ``--bids-filter-file`` overrides them per key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from bsym_cli.config import Config
from bsym_cli.errors import MissingInputError, NothingSelectedError
from bsym_cli.logs import get_logger

SPACES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")
#: Entities that identify a run across the files of one derivative (space/res/desc/suffix excluded).
RUN_ENTITIES = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction", "direction",
                "run", "echo")
_PIPELINES = {"fmriprep": "fmriprep", "qsiprep": "qsiprep"}
_IGNORE = ["code", "stimuli", "sourcedata", "models", "derivatives", re.compile(r"/\.")]


def default_queries() -> dict[str, dict[str, Any]]:
    """The default pybids queries (``bsym_cli/data/queries.json``), without its ``_doc`` entry."""
    text = resources.files("bsym_cli").joinpath("data/queries.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


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


@dataclass(frozen=True)
class DwiRun:
    """One diffusion series: raw BIDS or QSIPrep-preprocessed."""

    dwi: Path
    bval: Path | None
    bvec: Path | None
    mask: Path | None
    source: Literal["raw", "qsiprep"]
    entities: dict[str, str] = field(hash=False)


@dataclass
class ParticipantInputs:
    """Everything found for one participant (and session), and what was wrong with it."""

    subject: str
    session: str | None
    bold_runs: list[BoldRun] = field(default_factory=list)
    dwi_runs: list[DwiRun] = field(default_factory=list)
    t1w: Path | None = None
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
        get_logger().warning("No data for participant(s) %s in %s; skipping them.",
                             ", ".join(missing), bids_dir)
    return chosen


def _layout(root: Path, subjects: list[str], database_dir: Path, derivative: bool):
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    keep = "|".join(re.escape(s) for s in subjects)
    ignore = [*_IGNORE, re.compile(rf"^/sub-(?!(?:{keep})(?:/|$))")]
    key = hashlib.sha256(f"{root.resolve()}|{','.join(subjects)}".encode()).hexdigest()[:16]
    database = database_dir / f"{root.name}-{key}"
    indexer = BIDSLayoutIndexer(validate=False, ignore=ignore)
    config = ["bids", "derivatives"] if derivative else ["bids"]
    return BIDSLayout(root, validate=False, is_derivative=derivative, config=config, indexer=indexer,
                      database_path=database)


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
        from bsym_cli.validate import validate_bids_names

        validate_bids_names(bids_dir, subjects)
    database_dir = Path(ex.bids_database_dir or Path(ex.work_dir) / "bids_db")
    database_dir.mkdir(parents=True, exist_ok=True)
    layouts = {"raw": _layout(bids_dir, subjects, database_dir, derivative=False)}
    for kind, path in derivatives.items():
        layouts[kind] = _layout(path, subjects, database_dir, derivative=True)
    queries = default_queries()
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
                part.bold_runs = [_bold_run(f, get) for f in get("bold", **scope_bold)]
            if "dmri" not in wf.skip:
                part.dwi_runs = _dwi_runs(get, scope)
            t1w = get("t1w", **scope)
            part.t1w = Path(t1w[0].path) if t1w else None
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


def _bold_run(bold, get) -> BoldRun:
    ents = bold.get_entities()
    same_run = _match(ents)
    same_space = {**same_run, "space": ents.get("space")}
    if "resolution" in ents:
        same_space["resolution"] = ents["resolution"]
    masks = get("boldmask", **same_space)
    refs = get("boldref", **same_space)
    confounds = get("confounds", **same_run)
    metadata = bold.get_metadata()
    t_r = metadata.get("RepetitionTime")
    return BoldRun(
        bold=Path(bold.path),
        mask=Path(masks[0].path) if masks else None,
        boldref=Path(refs[0].path) if refs else None,
        confounds=Path(confounds[0].path) if confounds else None,
        t_r=float(t_r) if t_r else None,
        space=str(ents.get("space")),
        entities={k: str(v) for k, v in ents.items() if k not in ("extension",)},
    )


def _dwi_runs(get, scope: dict[str, Any]) -> list[DwiRun]:
    """QSIPrep series when there are any (preferred), else the raw BIDS ones."""
    runs = []
    for dwi in get("qsiprep_dwi", **scope):
        ents = dwi.get_entities()
        masks = get("qsiprep_mask", **{**_match(ents), "space": ents.get("space")})
        runs.append(_dwi_run(dwi, Path(masks[0].path) if masks else None, "qsiprep"))
    return runs or [_dwi_run(dwi, None, "raw") for dwi in get("dwi", **scope)]


def _dwi_run(dwi, mask: Path | None, source: Literal["raw", "qsiprep"]) -> DwiRun:
    ents = {k: str(v) for k, v in dwi.get_entities().items() if k != "extension"}
    return DwiRun(dwi=Path(dwi.path), bval=_sibling(dwi.path, ".bval"), bvec=_sibling(dwi.path, ".bvec"),
                  mask=mask, source=source, entities=ents)


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
