"""The per-participant HTML report: one self-contained file (figures embedded), ``OUTPUT_DIR/sub-<label>.html``.

One report per participant covers every session; it is written for a failed participant too (its Errors
section lists the failure and the crash files of the run).
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bsym_cli import __version__
from bsym_cli.bids.derivatives import citation_text
from bsym_cli.cli.config import Config
from pipelines.atomic import is_temporary, write_text

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{border-bottom:2px solid #446;padding-bottom:.3em}h2{color:#335;margin-top:2em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}.warn{color:#a40}code{background:#eef;padding:0 .2em}
img{max-width:100%}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(src: str, caption: str) -> str:
    caption = html.escape(caption)
    return f'<figure><img src="{src}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _embed_file(path: Path, caption: str) -> str:
    mime = {".svg": "image/svg+xml", ".png": "image/png"}.get(path.suffix, "application/octet-stream")
    return _figure(f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode(), caption)


def _matrix_figure(path: Path, title: str, *, signed: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = pd.read_csv(path, sep="\t", index_col=0, na_values="n/a").to_numpy(float)
    limit = np.nanmax(np.abs(matrix)) or 1.0
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(
        matrix,
        cmap="RdBu_r" if signed else "viridis",
        vmin=-limit if signed else None,
        vmax=limit if signed else None,
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return _figure(_png(fig), f"{title} ({path.name})")


def _histogram(values: np.ndarray, title: str, xlabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    ax.hist(values[np.isfinite(values)], bins=40, color="#446")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    return _figure(_png(fig), title)


def colour_limit(deviations: np.ndarray) -> float:
    """Half-width of a symmetric colour range that shows contrast between parcels: the 98th percentile of
    their absolute deviations from the reference level (0 for a flat map)."""
    finite = np.abs(deviations[np.isfinite(deviations)])
    return float(np.percentile(finite, 98)) if finite.size else 0.0


def _brain_map(path: Path, title: str, *, level: float, scale: float, unit: str, reference: str) -> str:
    """Parcel values drawn as their deviation from a reference level, over the parcels' own spread.

    Drawn raw, incoming attention sits near the uniform level 1/R in every parcel and fills the whole colour
    bar with one colour; the deviation ``(value - level) * scale`` with a symmetric range shows which parcels
    draw more or less than that level.
    """
    import matplotlib

    matplotlib.use("Agg")
    import nibabel as nib
    from nilearn import plotting

    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=float)
    inside = data != 0
    deviation = np.where(inside, (data - level) * scale, 0.0)
    limit = colour_limit(deviation[inside])
    if not limit > 0:
        return f"<p>{html.escape(title)}: every parcel is at the {html.escape(reference)}; there is nothing to map.</p>"
    display = plotting.plot_stat_map(
        nib.Nifti1Image(deviation.astype(np.float32), img.affine),
        display_mode="z",
        cut_coords=6,
        colorbar=True,
        title=title,
        cmap="RdBu_r",
        symmetric_cbar=True,
        vmax=limit,
        threshold=limit * 1e-6,
    )
    fig = display.frame_axes.figure
    src = _png(fig)
    display.close()
    caption = (
        f"{title} ({path.name}): {unit} relative to the {reference}; colour range -{limit:.3g} to {limit:.3g} "
        "(98th percentile of the parcels' absolute deviation)"
    )
    return _figure(src, caption).replace("<figure>", f'<figure data-vmin="{-limit:.6g}" data-vmax="{limit:.6g}">', 1)


def _outputs(folder: Path, pattern: str) -> list[Path]:
    """The outputs under ``folder`` matching ``pattern``, sorted; files being written (dotfiles) excluded."""
    return sorted(p for p in folder.rglob(pattern) if not is_temporary(p))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


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


def _errors(folder: Path, run_uuid: str, error: str | None) -> str:
    """The Errors section: the failure of this run and the crash files its nodes left."""
    crashes = sorted((folder / "log" / run_uuid).glob("crash-*")) if (folder / "log" / run_uuid).is_dir() else []
    if error is None and not crashes:
        return "<h2>Errors</h2><p>No errors.</p>"
    parts = ["<h2>Errors</h2>"]
    if error is not None:
        parts.append(f'<p class="warn">{html.escape(error)}</p>')
    for crash in crashes:
        text = crash.read_text(errors="replace")
        parts.append(f"<h3>{html.escape(crash.name)}</h3><pre style='white-space:pre-wrap'>{html.escape(text)}</pre>")
    return "".join(parts)


def _session_outputs(folder: Path, n_regions: int | None) -> list[str]:
    """The figures and tables of one session's outputs under ``folder`` (``sub-X`` or ``sub-X/ses-Y``)."""
    sections = ["<h3>Functional connectivity</h3>"]
    for coverage in _outputs(folder, "*_stat-coverage_bold.tsv"):
        table = pd.read_csv(coverage, sep="\t", na_values="n/a")
        values = table["coverage"].to_numpy(float) if "coverage" in table else table.iloc[0].to_numpy(float)
        sections.append(_histogram(values, f"Parcel coverage by the brain mask ({coverage.name})", "coverage"))
    for sidecar in _outputs(folder, "*_stat-mean_timeseries.json"):
        meta = json.loads(sidecar.read_text())
        keep = [(k, v) for k, v in meta.items() if not isinstance(v, (dict, list)) or k == "ConfoundColumns"]
        sections.append(f"<h4>{html.escape(sidecar.name)}</h4>" + _table(keep))
    for relmat in _outputs(folder, "*_stat-pearsoncorrelation_relmat.tsv"):
        sections.append(_matrix_figure(relmat, "Functional connectivity (Pearson r)", signed=True))
    sections.append("<h3>Structural connectivity</h3>")
    for relmat in _outputs(folder, "*_stat-signedsc_relmat.tsv"):
        sections.append(_matrix_figure(relmat, "Signed structural connectome", signed=True))
    for figure in _outputs(folder, "*_desc-registration_dwi.*"):
        if figure.suffix in (".svg", ".png"):
            sections.append(_embed_file(figure, "Atlas-to-DWI registration check"))
    sections.append("<h3>Model</h3>")
    for stat in _outputs(folder, "*_stat.nii.gz"):
        if "incomingattention" in stat.name and n_regions:
            sections.append(
                _brain_map(
                    stat,
                    "Incoming attention per parcel",
                    level=1 / n_regions,
                    scale=100 * n_regions,
                    unit="% difference",
                    reference=f"uniform level 1/R = 1/{n_regions}",
                )
            )
        elif "fusiongate" in stat.name:
            sections.append(
                _brain_map(
                    stat,
                    "Mean fusion gate per parcel",
                    level=0.5,
                    scale=1.0,
                    unit="gate",
                    reference="neutral gate 0.5 (equal weight to both streams)",
                )
            )
    for h5 in _outputs(folder, "*_desc-bsym_attention.h5"):
        import h5py

        with h5py.File(h5, "r") as data:
            if "fusion_gates" in data:
                sections.append(
                    _histogram(
                        np.asarray(data["fusion_gates"], float).ravel(),
                        "Fusion gate values (1 = functional, 0 = structural)",
                        "gate",
                    )
                )
    for recon in _outputs(folder, "*_desc-bsym_reconstruction.tsv"):
        r2 = pd.read_csv(recon, sep="\t", na_values="n/a")["r2"].to_numpy(float)
        sections.append(_histogram(r2, f"Masked-region reconstruction R² (median {np.nanmedian(r2):.2f})", "R²"))
    for prediction in _outputs(folder, "*_desc-bsym_prediction.tsv"):
        table = pd.read_csv(prediction, sep="\t")
        sections.append("<h4>Predictions</h4>" + table.to_html(index=False))
    return sections


def write_report(
    config: Config,
    participant: str,
    out_dir: Path,
    *,
    sessions: list[SessionSummary],
    weights_info: dict[str, Any] | None = None,
    warning: str | None = None,
    error: str | None = None,
    n_regions: int | None = None,
) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html``: About, Errors, then every session's inputs and outputs, Methods.

    Parameters
    ----------
    config : Config
        The run configuration (shown in the report).
    participant : str
        The label without ``sub-``.
    out_dir : Path
        OUTPUT_DIR.
    sessions : list of SessionSummary
        Every session of the participant (one entry without sessions); outputs are read from disk.
    weights_info : dict, optional
        Bundle provenance (name, sha256, source, licence, training).
    warning : str, optional
        Shown in About (e.g. the simulated demo weights on a real dataset).
    error : str, optional
        Why this participant failed in this run; its crash files are listed too.
    n_regions : int, optional
        R of the atlas (the uniform level of incoming attention is 1/R).
    """
    folder = out_dir / f"sub-{participant}"
    about = [
        ("bsym-app", __version__),
        ("Command", " ".join(["bsym-app", *sys.argv[1:]])),
        ("Configuration hash", config.hash),
        ("Run", config.execution.run_uuid),
        *sorted((weights_info or {}).items()),
    ]
    sections = [f"<h1>bsym-app report: sub-{html.escape(participant)}</h1>", "<h2>About</h2>", _table(about)]
    if warning:
        sections.append(f'<p class="warn">{html.escape(warning)}</p>')
    sections.append(_errors(folder, config.execution.run_uuid, error))
    for summary in sessions:
        title = f"Session {summary.session}" if summary.session else "Outputs"
        sections += [f"<h2>{html.escape(title)}</h2>", "<h3>Inputs</h3>", _table(summary.inputs)]
        if summary.problems:
            items = "".join(f'<li class="warn">{html.escape(p)}</li>' for p in summary.problems)
            sections.append(f"<h3>Skipped</h3><ul>{items}</ul>")
        sections += _session_outputs(folder / f"ses-{summary.session}" if summary.session else folder, n_regions)
    methods = "\n\n".join(dict.fromkeys(s.methods for s in sessions if s.methods))
    sections.append(f"<h2>Methods</h2><pre style='white-space:pre-wrap'>{html.escape(methods)}</pre>")
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sub-{html.escape(participant)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    return write_text(out_dir / f"sub-{participant}.html", page)
