"""Participant level: discover, validate, run the Nipype graph, write derivatives, run the model.

One participant's failure is logged with its crash files and does not stop the others (unless
``--stop-on-first-crash``); the exit code reflects what went wrong.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from bsym_cli.bids.atlases import Atlas, copy_atlas_dataset, resolve_atlas
from bsym_cli.bids.derivatives import DerivativesWriter, upstream_generated_by
from bsym_cli.bids.discovery import choose_spaces, discover
from bsym_cli.bids.inputs import ParticipantInputs
from bsym_cli.bids.validate import validate
from bsym_cli.cli.config import Config, dump_config
from bsym_cli.levels.memory import MemoryPlan, announce, plan_memory
from bsym_cli.levels.model_stage import Weights, load_weights, read_contract, run_model_stage
from bsym_cli.levels.participant import ModelContract, ParticipantGraph, build_graph, run_workflows
from bsym_cli.levels.placement import place_atlas, place_atlas_on_bold
from bsym_cli.utils.errors import BsymError, ExitCode, exit_code_for
from bsym_cli.utils.logs import get_logger
from pipelines.atomic import remove_stale_temporaries, waiting_lock


def run(config: Config) -> None:
    """Prepare the process (caches under the work dir, threads, login name) and run the analysis level."""
    from bsym_cli.levels.runtime import ensure_login_name, redirect_caches, set_threads

    redirect_caches(config.execution.work_dir)
    set_threads(config.resources.omp_nthreads)
    ensure_login_name()
    if config.execution.analysis_level == "group":
        from bsym_cli.levels.group import run_group

        run_group(config)
    else:
        run_participants(config)


def run_participants(config: Config) -> None:
    """Process every selected participant; raise a :class:`BsymError` if any failed."""
    from bsym_cli.levels.runtime import resolve_device, resolve_precision

    ex, wf = config.execution, config.workflow
    log = get_logger()
    device = None if "model" in wf.skip else resolve_device(config.model.device)
    precision = "fp32" if device is None else resolve_precision(config.model.precision, device)
    study = discover(config)
    participants = validate(study, denoise_strategy=wf.denoise_strategy)
    atlas = resolve_atlas(wf.atlas, atlas_dataset=wf.atlas_dataset)
    log.info("Atlas %s: %d regions, from %s", atlas.label, len(atlas.indices), atlas.root)
    for part in participants:
        part.bold_runs = choose_spaces(part.bold_runs, list(atlas.images))
    datasets = {"raw": study.bids_dir, **study.derivatives}
    writer = DerivativesWriter(ex.output_dir, datasets)
    writer.write_dataset_files(
        config_hash=config.hash, upstream=upstream_generated_by(datasets), strict_config=ex.strict_config
    )
    _copy_shared_inputs(atlas, study.bids_dir, Path(ex.output_dir))
    dump_config(config, Path(ex.work_dir) / ex.run_uuid)
    contract = read_contract(config)
    if ex.boilerplate_only:
        _write_boilerplate(config, participants, atlas, contract)
        return
    weights = None if device is None or ex.reports_only else load_weights(config, atlas)
    memory = plan_memory(
        config, participants, n_regions=len(atlas.indices), n_timepoints=contract.n_timepoints, device=device
    )
    announce(memory, config.model.batch_size)
    failures: dict[str, BaseException] = {}
    methods: dict[str, str] = {}  # methods text of each session's graph, for the reports
    for part in participants:
        start = time.monotonic()
        log_dir = Path(ex.output_dir) / f"sub-{part.subject}" / "log" / ex.run_uuid
        try:
            with participant_lock(config, part.subject):
                remove_stale_temporaries(Path(ex.output_dir) / f"sub-{part.subject}")
                remove_stale_temporaries(Path(ex.work_dir) / f"sub-{part.subject}")
                dump_config(config, log_dir)
                graph = build_graph(config, part, atlas, contract, memory)
                if not ex.reports_only:
                    process_participant(
                        config, part, graph, atlas, writer, log_dir, weights, device, memory, precision=precision
                    )
                methods[part.label] = graph.methods
                report = _report(config, part, participants, atlas, weights, methods)
            log.info("%s: report %s", part.label, report)
        except Exception as exc:  # one participant's failure must not stop the others
            failures[part.label] = exc
            log.error("%s failed: %s", part.label, exc)
            _failure_report(config, part, participants, atlas, weights, methods, exc)
            if ex.stop_on_first_crash:
                raise
        else:
            log.info(
                "%s finished in %.0f s; outputs in %s",
                part.label,
                time.monotonic() - start,
                Path(ex.output_dir) / f"sub-{part.subject}",
            )
    if failures or study.problems:
        raise _summary(failures, study.problems, len(participants))


def _summary(failures: dict[str, BaseException], problems: list, n_processed: int) -> BsymError:
    """One error for the end of a run in which participants failed or inputs were skipped.

    Its code is the failures' and problems' common exit code; 1 when a participant crashed beside
    other errors, else 65 when some input was malformed, else 66.
    """
    codes = {exit_code_for(exc) for exc in failures.values()}
    codes |= {ExitCode.MISSING_INPUT if p.missing else ExitCode.BAD_INPUT_DATA for p in problems}
    if len(codes) == 1:
        code = codes.pop()
    else:
        code = ExitCode.FAILURE if ExitCode.FAILURE in codes else ExitCode.BAD_INPUT_DATA
    parts = []
    if failures:
        details = "; ".join(f"{label}: {exc}" for label, exc in failures.items())
        parts.append(f"{len(failures)} of {n_processed} participant(s) failed: {details}")
    if problems:
        details = "\n  ".join(p.message for p in problems)
        parts.append(f"{len(problems)} input problem(s); the affected runs were skipped:\n  {details}")
    return BsymError("\n".join(parts), code=code)


@contextlib.contextmanager
def participant_lock(config: Config, subject: str) -> Iterator[None]:
    """Let one run at a time process ``sub-<subject>`` in this work directory and this OUTPUT_DIR.

    A second run of the same participant (a resubmitted job, a typo in an array) waits for the first,
    then finds its work finished and reuses it.
    """
    ex = config.execution
    name = f".bsym-sub-{subject}.lock"
    with (
        waiting_lock(Path(ex.work_dir) / name, f"sub-{subject} in {ex.work_dir}"),
        waiting_lock(Path(ex.output_dir) / name, f"sub-{subject} in {ex.output_dir}"),
    ):
        yield


def process_participant(
    config: Config,
    part: ParticipantInputs,
    graph: ParticipantGraph,
    atlas: Atlas,
    writer: DerivativesWriter,
    log_dir: Path,
    weights: Weights | None,
    device: str | None,
    memory: MemoryPlan,
    *,
    precision: str = "fp32",
) -> None:
    """Run the workflows of one participant, write their outputs, then the model stage."""
    runs = run_workflows(config, part, graph, atlas, writer, log_dir, memory)
    if weights is not None:
        run_model_stage(
            config, part, atlas, writer, runs, weights, device, batch_size=memory.batch_size, precision=precision
        )


def _report(
    config: Config,
    part: ParticipantInputs,
    participants: list[ParticipantInputs],
    atlas: Atlas,
    weights: Weights | None,
    methods: dict[str, str],
) -> Path:
    """Write the report of ``part``'s participant: every session of it that this run selected.

    ``methods`` holds the methods text of each session whose graph this run has built so far.
    """
    from bsym_cli.levels.report import SessionSummary, boilerplate, write_report

    sessions = []
    for other in (p for p in participants if p.subject == part.subject):
        inputs = [("Participant", other.label), ("Atlas", f"{atlas.label} ({len(atlas.indices)} regions)")]
        placed = [
            (f"{bold.bold.name} (TR {bold.t_r} s)", "BOLD", place_atlas_on_bold(bold, atlas, config.workflow))
            for bold in other.bold_runs
        ]
        placed += [
            (f"{dwi.dwi.name} ({dwi.source})", "DWI", place_atlas(dwi, atlas, config.workflow, other))
            for dwi in other.dwi_runs
        ]
        for name, kind, placement in placed:
            inputs += [(kind, name), ("Atlas placement", placement.describe())]
            inputs += [("Warning", placement.warning)] if placement.warning else []
        inputs += [("T1w", other.t1w.name)] if other.t1w else []
        text = boilerplate([methods[other.label]]) if other.label in methods else ""
        sessions.append(SessionSummary(other.label, other.session, inputs, list(other.problems), text))
    info = {}
    if weights is not None:
        meta = weights.meta
        info = {
            "Weights": meta.name,
            "Weights sha256": meta.sha256,
            "Weights source": meta.source,
            "Weights licence": meta.licence,
            "Weights training": meta.training,
        }
    return write_report(
        config,
        part.subject,
        Path(config.execution.output_dir),
        sessions=sessions,
        weights_info=info,
        warning=None if weights is None else weights.warning,
        n_regions=len(atlas.indices),
    )


def _failure_report(
    config: Config,
    part: ParticipantInputs,
    participants: list[ParticipantInputs],
    atlas: Atlas,
    weights: Weights | None,
    methods: dict[str, str],
    exc: BaseException,
) -> None:
    """Write the report of a participant that failed, with the failure in its Errors section."""
    from bsym_cli.levels.report import write_failure

    ex = config.execution
    try:
        log_dir = Path(ex.output_dir) / f"sub-{part.subject}" / "log" / ex.run_uuid
        write_failure(log_dir, part.label, exc, Path(ex.work_dir))
        _report(config, part, participants, atlas, weights, methods)
    except Exception as report_exc:  # the failure is already logged and counted; a report must not hide it
        get_logger().warning("%s: could not write its report either: %s", part.label, report_exc)


def _write_boilerplate(
    config: Config, participants: list[ParticipantInputs], atlas: Atlas, contract: ModelContract
) -> None:
    """``--boilerplate-only``: write the methods text of the selected participants' graphs and stop."""
    from bsym_cli.levels.report import boilerplate
    from pipelines.atomic import write_text

    texts = [build_graph(config, part, atlas, contract).methods for part in participants]
    path = write_text(Path(config.execution.output_dir) / "logs" / "CITATION.md", boilerplate(texts))
    get_logger().info("Methods boilerplate written to %s", path)


def _copy_shared_inputs(atlas: Atlas, bids_dir: Path, out_dir: Path) -> None:
    """Copy the atlas dataset to ``sourcedata/atlases`` and ``participants.tsv`` (+ json) beside the outputs.

    With the table there, the group level needs only OUTPUT_DIR. Done under the dataset's lock, as
    concurrent participant jobs write the same files.
    """
    from pipelines.atomic import copy_file, locked

    with locked(out_dir):
        copy_atlas_dataset(atlas, out_dir / "sourcedata" / "atlases")
        for name in ("participants.tsv", "participants.json"):
            if (bids_dir / name).exists():
                copy_file(bids_dir / name, out_dir / name)
