"""Run one participant's workflows and copy their results to BIDS derivative names."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsym_cli.bids.atlases import Atlas
from bsym_cli.bids.derivatives import DerivativesWriter
from bsym_cli.bids.inputs import BoldRun, DwiRun, ParticipantInputs
from bsym_cli.cli.config import Config, WorkflowConfig
from bsym_cli.levels.memory import MemoryPlan
from bsym_cli.levels.placement import Placement, place_atlas, place_atlas_on_bold
from bsym_cli.utils.errors import BsymError, ExitCode
from bsym_cli.utils.logs import get_logger


@dataclass(frozen=True)
class ModelContract:
    """What the weights expect of the windows: TR (s) and frames per window."""

    t_r: float = 0.72
    n_timepoints: int = 200


@dataclass
class RunResult:
    """A finished run: its outputs in the work directory and where they were written."""

    kind: str  # "fmri" or "dmri"
    run_id: str
    source: dict[str, str]
    files: dict[str, str | None]
    written: dict[str, Path]


def run_id(entities: dict[str, str], kind: str) -> str:
    """A node-safe identifier of a run from its entities (``task_rest_run_1``)."""
    keys = {
        "session": "ses",
        "task": "task",
        "acquisition": "acq",
        "reconstruction": "rec",
        "direction": "dir",
        "run": "run",
        "echo": "echo",
        "space": "space",
    }
    parts = [f"{short}_{entities[k]}" for k, short in keys.items() if entities.get(k)]
    return re.sub(r"[^a-zA-Z0-9_]", "", "_".join(parts) or kind)


def template_image() -> Path:
    """TemplateFlow's MNI152NLin6Asym 1 mm brain (FSL's MNI152), registered to the mean b0 of a DWI in no known
    space; exit 66 naming the file when it has not been fetched."""
    from bsym_cli.bids.templates import REGISTRATION_QUERY, REGISTRATION_TEMPLATE, template_file

    return template_file(REGISTRATION_TEMPLATE, **REGISTRATION_QUERY)


@dataclass
class ParticipantGraph:
    """The Nipype graph of one participant and what is needed to collect its results."""

    workflow: Any
    bold_specs: list[dict[str, Any]]
    dwi_specs: list[dict[str, Any]]
    manifest_dir: Path

    @property
    def methods(self) -> str:
        """Methods boilerplate of the graph (its workflows' descriptions)."""
        return getattr(self.workflow, "__desc__", "") or ""


def build_graph(
    config: Config,
    part: ParticipantInputs,
    atlas: Atlas,
    contract: ModelContract,
    memory: MemoryPlan | None = None,
) -> ParticipantGraph:
    """The participant's graph (one fMRI workflow per BOLD run, one dMRI workflow per DWI), not yet run."""
    from pipelines.participant import init_participant_wf

    ex, wf, res = config.execution, config.workflow, config.resources
    work = Path(ex.work_dir) / f"sub-{part.subject}"
    manifest_dir = work / "manifests" / (f"ses-{part.session}" if part.session else "nosession")
    bold_specs = [_bold_spec(r, atlas, config.workflow) for r in part.bold_runs]
    dwi_specs = [_dwi_spec(r, atlas, config.workflow, part) for r in part.dwi_runs]
    band = (wf.high_pass, wf.low_pass) if (wf.high_pass or wf.low_pass) else None
    fmri_options = {
        "labels": atlas.indices,
        "names": atlas.names,
        "target_t_r": contract.t_r,
        "window_length": contract.n_timepoints,
        "window_stride": wf.window_stride,
        "denoise_strategy": wf.denoise_strategy,
        "dummy_scans": wf.dummy_scans,
        "band_pass": band,
        "min_coverage": wf.min_coverage,
        "fd_threshold": wf.fd_thresh,
        "work_cache_dir": str(Path(ex.work_dir) / "atlas_cache"),
        "omp_nthreads": res.omp_nthreads,
        "mem_gb": memory.bold_node_gb if memory else 1.0,
    }
    dmri_options = {
        "labels": atlas.indices,
        "names": atlas.names,
        "n_streamlines": wf.streamlines,
        "seed": wf.seed,
        "registration": wf.registration,
        "save_tractogram": wf.save_tractogram,
        "omp_nthreads": res.omp_nthreads,
        "mem_gb": memory.dwi_node_gb if memory else 2.0,
    }
    name = f"sub_{part.subject}" + (f"_ses_{part.session}" if part.session else "") + "_wf"
    workflow = init_participant_wf(
        name=name,
        manifest_dir=manifest_dir,
        bold_runs=bold_specs,
        dwi_runs=dwi_specs,
        fmri_options=fmri_options,
        dmri_options=dmri_options,
    )
    workflow.base_dir = str(work)
    return ParticipantGraph(workflow, bold_specs, dwi_specs, manifest_dir)


def run_workflows(
    config: Config,
    part: ParticipantInputs,
    graph: ParticipantGraph,
    atlas: Atlas,
    writer: DerivativesWriter,
    log_dir: Path,
    memory: MemoryPlan | None = None,
) -> list[RunResult]:
    """Run the participant's Nipype graph (from :func:`build_graph`), then write each finished run's derivatives.

    Returns the finished runs; raises a :class:`BsymError` naming the failed runs and their crash files
    if any run failed (after the finished ones are written).
    """
    from pipelines.engine import configure_nipype, input_errors, run_workflow, set_crash_folder
    from pipelines.participant import read_manifest

    ex, res = config.execution, config.resources
    log = get_logger()
    if not part.bold_runs and not part.dwi_runs:
        return []
    if graph.manifest_dir.exists():
        shutil.rmtree(graph.manifest_dir)  # a manifest is only trusted from this run
    configure_nipype(
        crashdump_dir=log_dir,
        stop_on_first_crash=ex.stop_on_first_crash,
        verbose=ex.verbosity >= 2,
        resource_monitor=res.resource_monitor,
    )
    set_crash_folder(graph.workflow, log_dir)
    log.info(
        "%s: running %d fMRI and %d dMRI workflow(s) with %d process(es)",
        part.label,
        len(graph.bold_specs),
        len(graph.dwi_specs),
        res.nprocs,
    )
    for spec in [*graph.bold_specs, *graph.dwi_specs]:
        placement: Placement = spec["placement"]
        log.info("%s: atlas placement for %s: %s", part.label, spec["id"], placement.describe())
        if placement.warning:
            log.warning("%s: %s", part.label, placement.warning)
    crashed: Exception | None = None
    try:
        run_workflow(
            graph.workflow,
            nprocs=res.nprocs,
            mem_gb=memory.scheduler_gb if memory else res.mem_gb,
            plugin=config.nipype.plugin,
            plugin_args=config.nipype.plugin_args,
        )
    except RuntimeError as exc:  # Nipype raises after running everything it could
        crashed = exc
    results, failed = [], []
    for kind, specs, originals in (
        ("fmri", graph.bold_specs, part.bold_runs),
        ("dmri", graph.dwi_specs, part.dwi_runs),
    ):
        for spec, original in zip(specs, originals, strict=True):
            files = read_manifest(graph.manifest_dir, spec["id"])
            if files is None:
                failed.append(str(original.bold if kind == "fmri" else original.dwi))
                continue
            if kind == "fmri":
                written = _write_fmri(writer, original, files, atlas, spec["placement"])
            else:
                written = _write_dmri(writer, original, files, atlas, spec["placement"])
            results.append(RunResult(kind, spec["id"], dict(original.entities), files, written))
            log.info("%s: %s run %s written (%d files)", part.label, kind, spec["id"], len(written))
    if failed or crashed:
        crash_files = sorted(log_dir.glob("crash-*"))
        errors = input_errors(crash_files)
        if errors:  # a defect of the inputs, found inside a node: its message and exit code, not a traceback
            raise errors[0]
        where = f"crash files: {', '.join(str(p) for p in crash_files)}" if crash_files else f"log folder: {log_dir}"
        raise BsymError(
            f"{part.label}: {len(failed)} run(s) failed ({', '.join(failed) or crashed}); {where}",
            code=ExitCode.FAILURE,
        )
    return results


def _bold_spec(run: BoldRun, atlas: Atlas, wf: WorkflowConfig) -> dict[str, Any]:
    placement = place_atlas_on_bold(run, atlas, wf)
    return {
        "id": run_id(run.entities, "bold"),
        "bold_file": run.bold,
        "mask_file": run.mask,
        "confounds_file": run.confounds,
        "t_r": run.t_r,
        "atlas_dseg": placement.atlas_image,
        "atlas_transforms": list(placement.transforms),
        "placement": placement,
    }


def _dwi_spec(run: DwiRun, atlas: Atlas, wf: WorkflowConfig, part: ParticipantInputs) -> dict[str, Any]:
    placement = place_atlas(run, atlas, wf, part)
    spec: dict[str, Any] = {
        "id": run_id(run.entities, "dwi"),
        "dwi_file": run.dwi,
        "bval_file": run.bval,
        "bvec_file": run.bvec,
        "mask_file": run.mask,
        "atlas_dseg": placement.atlas_image,
        "registration": placement.registration,
        "transforms": list(placement.transforms),
        "denoise": wf.dwi_denoise if wf.dwi_denoise is not None else run.source == "raw",
        "placement": placement,
    }
    if placement.registration in ("affine", "syn"):
        spec["template_file"] = template_image()
    elif placement.registration == "t1w":
        spec["template_file"] = placement.reference
        if placement.reference_mask is not None:
            spec["template_mask_file"] = placement.reference_mask
    return spec


def _metadata(files: dict[str, str | None]) -> dict[str, Any]:
    path = files.get("metadata")
    return json.loads(Path(path).read_text()) if path else {}


def _write_fmri(
    writer: DerivativesWriter, run: BoldRun, files: dict[str, str | None], atlas: Atlas, placement: Placement
) -> dict[str, Path]:
    meta = _metadata(files)
    common = {"Atlas": atlas.label, "AtlasLabelsSHA256": atlas.labels_sha256, **placement.sidecar()}
    t_r = meta.get("t_r", run.t_r)
    sources = [run.bold, run.mask, run.confounds]
    ents = {"space": run.space, "atlas": atlas.label}
    written = {
        "timeseries": writer.write(
            "timeseries",
            run.entities,
            src_file=files["timeseries"],
            sources=sources,
            sidecar={**common, "RepetitionTime": t_r, "SamplingFrequency": 1.0 / t_r if t_r else None, **meta},
            **ents,
        ),
        "relmat": writer.write(
            "relmat",
            run.entities,
            src_file=files["relmat"],
            sources=sources,
            sidecar={**common, "Measure": "Pearson correlation of denoised parcel means", **meta},
            **ents,
        ),
        "coverage": writer.write("coverage", run.entities, src_file=files["coverage"], **ents),
    }
    return written


def _column_descriptions(atlas: Atlas) -> dict[str, Any]:
    """Sidecar entries that define the labels table's columns beyond ``index`` and ``name``."""
    return (
        {"network": {"Description": "Network the region belongs to, from the atlas's table."}} if atlas.networks else {}
    )


def _write_dmri(
    writer: DerivativesWriter, run: DwiRun, files: dict[str, str | None], atlas: Atlas, placement: Placement
) -> dict[str, Path]:
    meta = _metadata(files)
    written: dict[str, Path] = {}
    record = placement.sidecar()
    if files.get("registration_figure"):  # the QC figure of the placement, named in every sidecar
        figure = Path(files["registration_figure"])
        written["registration_figure"] = writer.write(
            "registration_figure", run.entities, src_file=figure, extension=figure.suffix
        )
        record["AtlasPlacement"]["QCFigure"] = writer.uri(written["registration_figure"])
    common = {"Atlas": atlas.label, "AtlasLabelsSHA256": atlas.labels_sha256, **record}
    sources = [s for s in (run.dwi, run.bval, run.bvec, run.mask) if s]
    written |= {
        "atlas_dwi": writer.write(
            "atlas_dwi",
            run.entities,
            src_file=files["atlas_dwi"],
            atlas=atlas.label,
            sources=sources,
            sidecar={
                **common,
                "Description": f"Atlas {atlas.label} on the grid of the diffusion series, with its labels table.",
                "SpatialReference": writer.uri(run.dwi),
                **_column_descriptions(atlas),
                **meta.get("Registration", {}),
            },
        ),
        "count_relmat": writer.write(
            "count_relmat",
            run.entities,
            src_file=files["count_relmat"],
            atlas=atlas.label,
            sources=sources,
            sidecar={**common, **meta},
        ),
        "signed_relmat": writer.write(
            "signed_relmat",
            run.entities,
            src_file=files["signed_relmat"],
            atlas=atlas.label,
            sources=sources,
            sidecar={**common, **meta},
        ),
    }
    dseg_tsv = written["atlas_dwi"].with_name(written["atlas_dwi"].name.replace(".nii.gz", ".tsv"))
    from pipelines.atomic import atomic_path

    with atomic_path(dseg_tsv) as tmp:
        atlas.table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    if files.get("tractogram"):
        written["tractogram"] = writer.write(
            "tractogram",
            run.entities,
            src_file=files["tractogram"],
            sources=sources,
            sidecar={"StreamlineCount": meta.get("StreamlineCount")},
        )
    return written
