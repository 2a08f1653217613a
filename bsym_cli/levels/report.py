"""The per-participant visual report, ``OUTPUT_DIR/sub-<label>.html``, assembled by nireports.

The figures (SVG) and small HTML pieces ("reportlets") are written to ``OUTPUT_DIR/sub-<label>/figures/`` from
the outputs on disk; nireports then finds them with a BIDS query per section, as in fMRIPrep. The section
layout lives in ``data/report.yml``. One report covers every session of the participant, and a failed
participant gets one too: its failure is written as a crash file of the run, which the Errors section lists
with the crash files of the run's Nipype nodes.
"""

from __future__ import annotations

import html
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bsym_cli import __version__
from bsym_cli.bids.derivatives import citation_text
from bsym_cli.cli.config import Config
from pipelines.atomic import TMP_PREFIX, is_temporary, write_text
from pipelines.figures import histogram_figure, matrix_figure, parcel_map_figure

REPORT_SPEC = Path(__file__).parent / "data" / "report.yml"

# ``desc`` values of the reportlets this module writes (the registration figure is a pipeline output)
REPORTLETS = (
    "summary",
    "denoising",
    "coverage",
    "connectivity",
    "connectome",
    "incomingattention",
    "fusiongate",
    "gates",
    "reconstruction",
    "predictions",
    "methods",
)
_KEEP_ENTITIES = ("sub", "ses", "task", "acq", "run")


def boilerplate(descriptions: list[str]) -> str:
    """The methods text of a run: the workflows' descriptions, then the citations."""
    unique = list(dict.fromkeys(d.strip() for d in descriptions if d and d.strip()))
    return "\n\n".join([*unique, citation_text()])


@dataclass
class SessionSummary:
    """What a report says of one session (or of a participant without sessions).

    Attributes
    ----------
    label : str
        ``sub-01`` or ``sub-01_ses-a``.
    session : str or None
        The session label without ``ses-``.
    inputs : list of (str, value)
        What was found (shown as a table).
    problems : list of str
        Inputs that were skipped and why.
    methods : str
        Methods boilerplate of the session's graph.
    """

    label: str
    session: str | None
    inputs: list[tuple[str, Any]]
    problems: list[str] = field(default_factory=list)
    methods: str = ""


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="table table-sm">{body}</table>'


def _outputs(folder: Path, pattern: str) -> list[Path]:
    """The outputs under ``folder`` matching ``pattern``, sorted; files being written (dotfiles) excluded."""
    return sorted(p for p in folder.rglob(pattern) if not is_temporary(p) and "figures" not in p.parts)


def _figure_name(output: Path, desc: str, suffix: str, extension: str = ".svg") -> str:
    """``sub-01_ses-a_task-rest_run-1_desc-<desc>_<suffix>.svg`` from an output's name: the entities that tell
    runs apart, then ``desc``."""
    pairs = [part.split("-", 1) for part in output.name.split(".")[0].split("_")[:-1] if "-" in part]
    kept = [f"{key}-{value}" for key, value in pairs if key in _KEEP_ENTITIES]
    return "_".join([*kept, f"desc-{desc}", suffix]) + extension


def _owned_by(figure: Path, summary: SessionSummary) -> bool:
    """Whether ``figure`` is a reportlet of ``summary``'s session that this module (re)writes."""
    name = figure.name
    if not name.startswith(f"{summary.label}_") or (summary.session is None and "_ses-" in name):
        return False
    return any(f"_desc-{desc}_" in name for desc in REPORTLETS)


def write_reportlets(folder: Path, summary: SessionSummary, n_regions: int | None) -> list[Path]:
    """Write the figures and HTML pieces of one session into ``folder/figures`` from its outputs on disk.

    ``folder`` is ``OUTPUT_DIR/sub-X``; the session's outputs are under ``folder`` or ``folder/ses-Y``. The
    session's older reportlets are removed first, so an output that is gone takes its figure with it.
    """
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for old in figures.iterdir():
        if _owned_by(old, summary):
            old.unlink()
    outputs = folder / f"ses-{summary.session}" if summary.session else folder
    written = []
    piece = _table(summary.inputs)
    if summary.problems:
        piece += "<p>Skipped:</p><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in summary.problems) + "</ul>"
    written.append(write_text(figures / f"{summary.label}_desc-summary_report.html", piece))
    if summary.methods:
        text = f'<pre style="white-space:pre-wrap">{html.escape(summary.methods)}</pre>'
        written.append(write_text(figures / f"{summary.label}_desc-methods_report.html", text))
    for coverage in _outputs(outputs, "*_stat-coverage_bold.tsv"):
        table = pd.read_csv(coverage, sep="\t", na_values="n/a")
        values = table["coverage"].to_numpy(float) if "coverage" in table else table.iloc[0].to_numpy(float)
        path = figures / _figure_name(coverage, "coverage", "bold")
        title = f"Parcel coverage by the brain mask ({coverage.name})"
        written.append(histogram_figure(values, path, title, "coverage"))
    for sidecar in _outputs(outputs, "*_stat-mean_timeseries.json"):
        meta = json.loads(sidecar.read_text())
        keep = [(k, v) for k, v in meta.items() if not isinstance(v, (dict, list)) or k == "ConfoundColumns"]
        path = figures / _figure_name(sidecar, "denoising", "bold", ".html")
        written.append(write_text(path, f"<p>{html.escape(sidecar.name)}</p>" + _table(keep)))
    for relmat in _outputs(outputs, "*_stat-pearsoncorrelation_relmat.tsv"):
        path = figures / _figure_name(relmat, "connectivity", "bold")
        written.append(matrix_figure(relmat, path, "Functional connectivity (Pearson r)", signed=True))
    for relmat in _outputs(outputs, "*_stat-signedsc_relmat.tsv"):
        path = figures / _figure_name(relmat, "connectome", "dwi")
        written.append(matrix_figure(relmat, path, "Signed structural connectome", signed=True))
    written += _model_reportlets(outputs, figures, n_regions)
    return written


def _model_reportlets(outputs: Path, figures: Path, n_regions: int | None) -> list[Path]:
    written = []
    for stat in _outputs(outputs, "*_stat.nii.gz"):
        if "incomingattention" in stat.name and n_regions:
            path = figures / _figure_name(stat, "incomingattention", "model")
            title = f"Incoming attention per parcel, % relative to the uniform level 1/R = 1/{n_regions}"
            if parcel_map_figure(stat, path, title, level=1 / n_regions, scale=100 * n_regions):
                written.append(path)
        elif "fusiongate" in stat.name:
            path = figures / _figure_name(stat, "fusiongate", "model")
            title = "Mean fusion gate per parcel relative to the neutral gate 0.5"
            if parcel_map_figure(stat, path, title, level=0.5, scale=1.0):
                written.append(path)
    for h5 in _outputs(outputs, "*_desc-bsym_attention.h5"):
        import h5py

        with h5py.File(h5, "r") as data:
            gates = np.asarray(data["fusion_gates"], float).ravel() if "fusion_gates" in data else None
        if gates is not None:
            path = figures / _figure_name(h5, "gates", "model")
            title = "Fusion gate values (1 = functional, 0 = structural)"
            written.append(histogram_figure(gates, path, title, "gate"))
    for recon in _outputs(outputs, "*_desc-bsym_reconstruction.tsv"):
        r2 = pd.read_csv(recon, sep="\t", na_values="n/a")["r2"].to_numpy(float)
        path = figures / _figure_name(recon, "reconstruction", "model")
        title = f"Masked-region reconstruction R² (median {np.nanmedian(r2):.2f})"
        written.append(histogram_figure(r2, path, title, "R²"))
    for prediction in _outputs(outputs, "*_desc-bsym_prediction.tsv"):
        table = pd.read_csv(prediction, sep="\t")
        path = figures / _figure_name(prediction, "predictions", "model", ".html")
        written.append(write_text(path, table.to_html(index=False, classes="table table-sm")))
    return written


def write_failure(log_dir: Path, label: str, exc: BaseException, work_dir: Path) -> Path:
    """Record why ``label`` failed as a text crash file of the run (Nipype's layout), for the Errors section."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    trace = "".join(traceback.format_exception(exc)).splitlines()
    lines = [
        f"Node: {label} (bsym-app participant level)",
        f"Working directory: {work_dir}",
        "",
        "Node inputs:",
        "",
        "Traceback (most recent call last):",
        *(trace[1:] if trace and trace[0].startswith("Traceback") else trace),
        f"{label} failed: {exc}",
    ]
    return write_text(log_dir / f"crash-{stamp}-bsym-app-{label}.txt", "\n".join(lines) + "\n")


def _about(config: Config, weights_info: dict[str, Any], warning: str | None) -> dict[str, dict[str, str]]:
    """The About section's tables (nireports metadata: group, then key-value pairs; keys without ``_``)."""
    about = {
        "Execution provenance": {
            "bsym-app version": __version__,
            "Command": " ".join(["bsym-app", *sys.argv[1:]]),
            "Configuration hash": config.hash,
            "Run": config.execution.run_uuid,
            "Date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        },
        "Weights": dict(weights_info) or {"Weights": "none loaded in this run"},
    }
    if warning:
        about["Warnings"] = {"Weights": warning}
    return {group: {k: html.escape(str(v)) for k, v in rows.items()} for group, rows in about.items()}


def write_report(
    config: Config,
    participant: str,
    out_dir: Path,
    *,
    sessions: list[SessionSummary],
    weights_info: dict[str, Any] | None = None,
    warning: str | None = None,
    n_regions: int | None = None,
) -> Path:
    """Write the reportlets of every session, then ``OUTPUT_DIR/sub-<label>.html`` with nireports.

    Parameters
    ----------
    config : Config
        The run configuration (shown in About).
    participant : str
        The label without ``sub-``.
    out_dir : Path
        OUTPUT_DIR.
    sessions : list of SessionSummary
        Every session of the participant in this run (one entry without sessions); outputs are read from disk.
    weights_info : dict, optional
        Bundle provenance (name, sha256, source, licence, training).
    warning : str, optional
        Shown in About (e.g. the simulated demo weights on a real dataset).
    n_regions : int, optional
        R of the atlas (the uniform level of incoming attention is 1/R).
    """
    from nireports.assembler.report import Report

    out_dir = Path(out_dir).absolute()
    folder = out_dir / f"sub-{participant}"
    for summary in sessions:
        write_reportlets(folder, summary, n_regions)
    report = Report(
        out_dir,
        config.execution.run_uuid,
        bootstrap_file=REPORT_SPEC,
        out_filename=f"sub-{participant}.html",
        reportlets_dir=folder,
        metadata={"about": _about(config, weights_info or {}, warning)},
        subject=participant,
    )
    final = Path(report.out_filename)
    report.out_filename = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{final.name}")
    try:
        report.generate_report()
        os.replace(report.out_filename, final)
    finally:
        Path(report.out_filename).unlink(missing_ok=True)
    return final
