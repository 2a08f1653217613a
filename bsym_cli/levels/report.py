"""The per-participant HTML report: one self-contained file (figures embedded), ``OUTPUT_DIR/sub-<label>.html``."""

from __future__ import annotations

import base64
import html
import io
import json
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


def _brain_map(path: Path, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from nilearn import plotting

    display = plotting.plot_stat_map(
        str(path), display_mode="z", cut_coords=6, colorbar=True, title=title, cmap="inferno", symmetric_cbar=False
    )
    fig = display.frame_axes.figure
    src = _png(fig)
    display.close()
    return _figure(src, f"{title} ({path.name})")


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


def write_report(
    config: Config,
    participant: str,
    out_dir: Path,
    *,
    inputs: list[tuple[str, Any]],
    problems: list[str],
    methods: str,
    weights_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html`` from the participant's outputs on disk.

    Parameters
    ----------
    config : Config
        The run configuration (shown in the report).
    participant : str
        The label without ``sub-``.
    out_dir : Path
        OUTPUT_DIR.
    inputs : list of (str, value)
        What was found (shown as a table).
    problems : list of str
        Inputs that were skipped and why.
    methods : str
        Methods boilerplate.
    weights_info : dict, optional
        Bundle provenance (name, sha256, source, licence, training).
    """
    folder = out_dir / f"sub-{participant}"
    sections = [f"<h1>bsym-app report: sub-{html.escape(participant)}</h1>", "<h2>Inputs</h2>", _table(inputs)]
    if problems:
        sections.append(
            "<h3>Skipped</h3><ul>" + "".join(f'<li class="warn">{html.escape(p)}</li>' for p in problems) + "</ul>"
        )
    sections.append("<h2>Functional connectivity</h2>")
    for coverage in _outputs(folder, "*_stat-coverage_bold.tsv"):
        table = pd.read_csv(coverage, sep="\t", na_values="n/a")
        values = table["coverage"].to_numpy(float) if "coverage" in table else table.iloc[0].to_numpy(float)
        sections.append(_histogram(values, f"Parcel coverage by the brain mask ({coverage.name})", "coverage"))
    for sidecar in _outputs(folder, "*_stat-mean_timeseries.json"):
        meta = json.loads(sidecar.read_text())
        keep = [(k, v) for k, v in meta.items() if not isinstance(v, (dict, list)) or k == "ConfoundColumns"]
        sections.append(f"<h3>{html.escape(sidecar.name)}</h3>" + _table(keep))
    for relmat in _outputs(folder, "*_stat-pearsoncorrelation_relmat.tsv"):
        sections.append(_matrix_figure(relmat, "Functional connectivity (Pearson r)", signed=True))
    sections.append("<h2>Structural connectivity</h2>")
    for relmat in _outputs(folder, "*_stat-signedsc_relmat.tsv"):
        sections.append(_matrix_figure(relmat, "Signed structural connectome", signed=True))
    for figure in _outputs(folder, "*_desc-registration_dwi.*"):
        if figure.suffix in (".svg", ".png"):
            sections.append(_embed_file(figure, "Atlas-to-DWI registration check"))
    sections.append("<h2>Model</h2>")
    for stat in _outputs(folder, "*_stat.nii.gz"):
        sections.append(
            _brain_map(
                stat,
                "Incoming attention per parcel" if "incomingattention" in stat.name else "Mean fusion gate per parcel",
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
        sections.append("<h3>Predictions</h3>" + table.to_html(index=False))
    sections.append("<h2>Provenance</h2>")
    sections.append(
        _table(
            [
                ("bsym-app", __version__),
                ("Configuration hash", config.hash),
                ("Run", config.execution.run_uuid),
                *sorted((weights_info or {}).items()),
            ]
        )
    )
    sections.append(f"<h2>Methods</h2><pre style='white-space:pre-wrap'>{html.escape(methods)}</pre>")
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sub-{html.escape(participant)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    return write_text(out_dir / f"sub-{participant}.html", page)
