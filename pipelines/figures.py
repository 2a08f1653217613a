"""SVG figures of the derivatives for the visual report: matrices, histograms, parcel maps.

Every figure is written atomically and byte-for-byte reproducibly (no date, fixed element ids), so a rerun on
the same outputs rewrites the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path
from pipelines.images import load_image


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_svg(figure, path: str | Path, *, attributes: dict[str, str] | None = None) -> Path:
    """Write a matplotlib ``figure`` as SVG at ``path`` and close it.

    ``attributes`` are added to the root ``<svg>`` element (``data-vmin`` for the colour range, for example),
    so that a reader of the report can check a figure without rendering it.
    """
    import matplotlib

    plt = _pyplot()
    with matplotlib.rc_context({"svg.hashsalt": "bsym-app", "svg.fonttype": "none"}):
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="svg", metadata={"Date": None}, bbox_inches="tight")
            if attributes:
                extra = "".join(f' {key}="{value}"' for key, value in attributes.items())
                text = tmp.read_text()
                start = text.index("<svg")
                tmp.write_text(text[: start + 4] + extra + text[start + 4 :])
    plt.close(figure)
    return Path(path)


def matrix_figure(relmat: str | Path, path: str | Path, title: str, *, signed: bool) -> Path:
    """Draw a region-by-region TSV matrix (``relmat``) with a symmetric colour range when ``signed``."""
    plt = _pyplot()
    matrix = pd.read_csv(relmat, sep="\t", index_col=0, na_values="n/a").to_numpy(float)
    limit = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
    figure, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(
        matrix,
        cmap="RdBu_r" if signed else "viridis",
        vmin=-limit if signed else None,
        vmax=limit if signed else None,
        interpolation="nearest",
    )
    figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_svg(figure, path)


def histogram_figure(values: np.ndarray, path: str | Path, title: str, xlabel: str) -> Path:
    """Draw the histogram of the finite ``values``."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(4.5, 2.6))
    ax.hist(values[np.isfinite(values)], bins=40, color="#446")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    return save_svg(figure, path)


def colour_limit(deviations: np.ndarray) -> float:
    """Half-width of a symmetric colour range that shows contrast between parcels: the 98th percentile of
    their absolute deviations from the reference level (0 for a flat map)."""
    finite = np.abs(deviations[np.isfinite(deviations)])
    return float(np.percentile(finite, 98)) if finite.size else 0.0


def parcel_map_figure(
    stat_img: str | Path, path: str | Path, title: str, *, level: float, scale: float
) -> float | None:
    """Draw parcel values as their deviation ``(value - level) * scale`` over the parcels' own spread.

    Drawn raw, incoming attention sits near the uniform level 1/R in every parcel and fills the whole colour
    bar with one colour; the deviation with a symmetric range shows which parcels draw more or less than that
    level.

    Returns
    -------
    float or None
        The half-width of the colour range (also written as ``data-vmin``/``data-vmax`` on the SVG root), or
        None, with nothing written, when every parcel is at ``level``.
    """
    import nibabel as nib
    from nilearn import plotting

    _pyplot()
    img = load_image(stat_img)
    data = np.asarray(img.dataobj, dtype=np.float64)
    inside = data != 0
    deviation = np.where(inside, (data - level) * scale, 0.0)
    limit = colour_limit(deviation[inside])
    if not limit > 0:
        Path(path).unlink(missing_ok=True)
        return None
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
    figure = display.frame_axes.figure
    save_svg(figure, path, attributes={"data-vmin": f"{-limit:.6g}", "data-vmax": f"{limit:.6g}"})
    display.close()
    return limit


def probe_comparison_figure(table: pd.DataFrame, path: str | Path) -> Path:
    """Draw each target's out-of-fold score per feature set, with its 95% interval and permutation p.

    ``table`` has the columns of ``group/desc-bsym_probes.tsv``: ``target``, ``features``, ``metric``,
    ``score``, ``ci_low``, ``ci_high``, ``permutation_p`` (skipped sets have no score and are not drawn).
    """
    plt = _pyplot()
    scored = table[table["score"].notna()]
    targets = list(dict.fromkeys(scored["target"]))
    figure, axes = plt.subplots(
        1, max(1, len(targets)), figsize=(4.2 * max(1, len(targets)), 0.45 * scored.groupby("target").size().max() + 1)
    )
    for ax, target in zip(np.atleast_1d(axes), targets, strict=False):
        rows = scored[scored["target"] == target].iloc[::-1]
        y = np.arange(len(rows))
        colours = ["#c33" if name == "embeddings" else "#778" for name in rows["features"]]
        error = np.abs(rows[["ci_low", "ci_high"]].to_numpy(float).T - rows["score"].to_numpy(float))
        ax.barh(y, rows["score"], xerr=error, color=colours, capsize=3)
        for position, (_, row) in zip(y, rows.iterrows(), strict=True):
            ax.annotate(
                f"p={row['permutation_p']:.3f}",
                (1.0, position),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_yticks(y, rows["features"])
        ax.axvline(0, color="k", lw=0.6)
        ax.set_xlabel(f"out-of-fold {rows['metric'].iloc[0]} (95% bootstrap interval)")
        ax.set_title(f"{target} (n={int(rows['n'].iloc[0])})", fontsize=9)
    return save_svg(figure, path)
