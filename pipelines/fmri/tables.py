"""The parcel tables of a run (XCP-D style TSVs): mean time series, Pearson relmat, coverage.

* timeseries: one row per kept frame, one column per parcel name in atlas index order, ``n/a`` for n/a
  parcels.
* relmat: first column ``Node`` with the names, then one column per name; ``n/a`` where a correlation is
  undefined (n/a parcel or constant series).
* coverage: one row per parcel with columns ``index``, ``name``, ``coverage`` (fraction 0-1 of the parcel's
  voxels inside the brain mask). This long form is chosen over XCP-D's single wide row because it keeps the
  atlas index next to the name and reads like the atlas's own TSV.

Values are written with 8 significant digits (``%.8g``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path

FLOAT_FORMAT = "%.8g"


def pearson_relmat(series: np.ndarray) -> np.ndarray:
    """Pearson correlation between parcel series.

    Parameters
    ----------
    series : ndarray, shape (T, R)
        Parcel series; NaN columns allowed.

    Returns
    -------
    ndarray, shape (R, R)
        Correlations; NaN rows/columns for NaN or constant series (diagonal 1 elsewhere).
    """
    series = np.asarray(series, dtype=np.float64)
    centred = series - series.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    usable = np.isfinite(norms) & (norms > 1e-12 * np.maximum(1.0, np.abs(series).max(axis=0, initial=0)))
    scaled = np.where(usable, centred / np.where(usable, norms, 1.0), np.nan)
    relmat = scaled.T @ np.nan_to_num(scaled)
    relmat[~usable, :] = np.nan
    relmat[:, ~usable] = np.nan
    np.fill_diagonal(relmat, np.where(usable, 1.0, np.nan))
    return np.clip(relmat, -1.0, 1.0)


def write_timeseries_tsv(series: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """Write parcel series, shape (T, R), as a TSV with one column per name; NaN as ``n/a``."""
    table = pd.DataFrame(np.asarray(series), columns=list(names))
    return _write(table, path)


def write_relmat_tsv(relmat: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """Write a (R, R) matrix as a TSV: ``Node`` column of names, then one column per name."""
    table = pd.DataFrame(np.asarray(relmat), columns=list(names))
    table.insert(0, "Node", list(names))
    return _write(table, path)


def write_coverage_tsv(labels: Sequence[int], names: Sequence[str], coverage: np.ndarray, path: str | Path) -> Path:
    """Write coverage, shape (R,), as rows ``index``, ``name``, ``coverage``."""
    table = pd.DataFrame(
        {"index": np.asarray(labels, dtype=int), "name": list(names), "coverage": np.asarray(coverage, dtype=float)}
    )
    return _write(table, path)


def _write(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a TSV through a temporary name, so a crash never leaves a half file."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format=FLOAT_FORMAT)
    return Path(path)
