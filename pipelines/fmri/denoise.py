"""Denoising of parcel time series: dummy scans, fMRIPrep confound presets, censoring, band-pass.

Order and meaning of the steps (:func:`denoise`):

1. **Dummy scans.** The first ``n`` frames are dropped, ``n`` given by ``dummy_scans`` or, when that is None,
   by the leading frames flagged in the confounds' ``non_steady_state_outlier*`` columns.
2. **Confounds.** The preset ``strategy`` is loaded with nilearn's
   :func:`~nilearn.interfaces.fmriprep.load_confounds_strategy` (``simple``: motion 24 + WM/CSF + cosine drifts;
   ``scrubbing``: motion 24 + WM/CSF 8 + cosines, frames with FD > 0.5 mm or standardised DVARS > 1.5 censored,
   kept segments shorter than 5 frames censored too; ``compcor``: motion 24 + anatomical CompCor + cosines);
   ``none`` regresses nothing.
3. **Regression and band-pass** with :func:`nilearn.signal.clean` (no detrending beyond the cosine regressors,
   no standardisation, confounds standardised, Butterworth band-pass when ``band_pass`` is given). Censored
   frames are left out of the fit and of the output (nilearn interpolates them only for the filter).

Cleaning parcel means equals averaging cleaned voxels: regression and filtering are linear and use the same
design for every column, so the workflow parcellates first and cleans the R parcel series, not every voxel.
The mean of a parcel is kept unless a band-pass removes it (confounds are demeaned).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputDataError, MissingInputError

#: Denoising presets; all but ``none`` are nilearn's ``load_confounds_strategy`` presets.
STRATEGIES = ("simple", "scrubbing", "compcor", "none")
#: fMRIPrep's flag columns of non-steady-state volumes (one-hot, one column per flagged volume).
NON_STEADY_STATE_PREFIX = "non_steady_state_outlier"


@dataclass
class DenoisedSeries:
    """A cleaned run.

    Attributes
    ----------
    series : ndarray, shape (T_kept, R)
        Cleaned parcel series at the kept frames; NaN columns stay NaN.
    frames : ndarray of int, shape (T_kept,)
        Index of each kept frame in the original run (0 = first volume of the file).
    n_frames_input : int
        Frames of the run before anything was dropped.
    dummy_scans : int
        Leading frames dropped.
    dummy_scans_source : str
        ``"option"``, ``"confounds"`` (non_steady_state_outlier columns) or ``"none"``.
    censored_frames : list of int
        Frames (original indices) censored by the strategy, dummy scans excluded.
    confound_columns : list of str
        Regressors used, in the order given to the regression.
    strategy : str
    band_pass : tuple (high_pass_hz, low_pass_hz) or None
    """

    series: np.ndarray
    frames: np.ndarray
    n_frames_input: int
    dummy_scans: int
    dummy_scans_source: str
    censored_frames: list[int] = field(default_factory=list)
    confound_columns: list[str] = field(default_factory=list)
    strategy: str = "none"
    band_pass: tuple[float | None, float | None] | None = None


def count_dummy_scans(confounds: pd.DataFrame) -> int:
    """Number of leading non-steady-state frames flagged by fMRIPrep.

    Parameters
    ----------
    confounds : DataFrame, shape (T, n_columns)
        The fMRIPrep confounds table.

    Returns
    -------
    int
        Length of the run of flagged frames that starts at frame 0 (0 when none is flagged).
    """
    columns = [c for c in confounds.columns if c.startswith(NON_STEADY_STATE_PREFIX)]
    if not columns:
        return 0
    flagged = confounds[columns].fillna(0).to_numpy().sum(axis=1) > 0
    return int(np.argmin(flagged)) if not flagged.all() else len(flagged)


def denoise(
    series: np.ndarray,
    *,
    t_r: float,
    strategy: str = "simple",
    confounds_file: str | Path | None = None,
    dummy_scans: int | None = None,
    band_pass: tuple[float | None, float | None] | None = None,
    fd_threshold: float | None = None,
) -> DenoisedSeries:
    """Drop dummy scans, regress the strategy's confounds, censor, and band-pass parcel series.

    Parameters
    ----------
    series : ndarray, shape (T, R)
        Parcel mean series of one run, all frames of the file; NaN columns (n/a parcels) are carried through.
    t_r : float
        Repetition time, in seconds.
    strategy : {"simple", "scrubbing", "compcor", "none"}
        Denoising preset (see the module docstring).
    confounds_file : str or Path, optional
        fMRIPrep ``*_desc-confounds_timeseries.tsv`` (its ``.json`` beside it for ``compcor``). Required unless
        ``strategy`` is ``"none"`` and ``dummy_scans`` is given.
    dummy_scans : int, optional
        Leading frames to drop; None reads them from the confounds' non-steady-state columns.
    band_pass : tuple of (float or None, float or None), optional
        ``(high_pass_hz, low_pass_hz)`` of a Butterworth filter; None filters nothing.
    fd_threshold : float, optional
        Framewise displacement (mm) above which the ``scrubbing`` strategy censors a frame; None keeps the
        preset's 0.5 mm.

    Returns
    -------
    DenoisedSeries
    """
    if fd_threshold is not None and strategy != "scrubbing":
        raise ValueError(f"an FD threshold applies to the 'scrubbing' strategy only, not {strategy!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown denoising strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    series = np.asarray(series, dtype=np.float64)
    n_frames = series.shape[0]
    raw = _read_confounds_table(confounds_file, n_frames) if confounds_file is not None else None
    if raw is None and (strategy != "none" or dummy_scans is None):
        raise MissingInputError(
            f"denoising strategy {strategy!r} needs the fMRIPrep confounds file "
            "(*_desc-confounds_timeseries.tsv) of this run; none was given. Pass it, or use "
            "--denoise-strategy none together with --dummy-scans."
        )
    if dummy_scans is None:
        n_dummy, source = count_dummy_scans(raw), "confounds"
        source = source if n_dummy else "none"
    else:
        n_dummy, source = int(dummy_scans), "option"
    if not 0 <= n_dummy < n_frames:
        raise InputDataError(
            f"{confounds_file}: {n_dummy} dummy scans leave no frame of the {n_frames}-frame run; lower --dummy-scans."
        )
    # confounds_file is None only with strategy "none" (refused above otherwise)
    confounds, sample_mask = (
        (None, None)
        if strategy == "none" or confounds_file is None
        else _load_preset(confounds_file, strategy, fd_threshold)
    )
    kept = np.arange(n_dummy, n_frames)
    if sample_mask is not None:
        nss = _non_steady_state_frames(raw)
        censored = np.setdiff1d(np.setdiff1d(np.arange(n_frames), sample_mask), nss)
        kept = np.setdiff1d(kept, censored)
    censored_frames = sorted(set(range(n_dummy, n_frames)) - set(kept.tolist()))
    if kept.size < 2:
        raise InputDataError(
            f"{confounds_file}: strategy {strategy!r} leaves {kept.size} frame(s) of {n_frames}; "
            "use a less strict strategy (e.g. simple) or exclude this run."
        )
    valid = np.isfinite(series).all(axis=0)
    cleaned = np.full((kept.size, series.shape[1]), np.nan)
    body = series[n_dummy:, valid]  # (T - n_dummy, R_valid)
    design = None if confounds is None else confounds.to_numpy(dtype=np.float64)[n_dummy:]
    if design is not None and design.shape[1] == 0:
        design = None
    high_pass, low_pass = band_pass if band_pass is not None else (None, None)
    if design is None and high_pass is None and low_pass is None:
        cleaned[:, valid] = body[kept - n_dummy]
    elif body.shape[1]:
        cleaned[:, valid] = _clean(
            body, design=design, sample_mask=kept - n_dummy, t_r=t_r, high_pass=high_pass, low_pass=low_pass
        )
    return DenoisedSeries(
        series=cleaned,
        frames=kept,
        n_frames_input=n_frames,
        dummy_scans=n_dummy,
        dummy_scans_source=source,
        censored_frames=censored_frames,
        confound_columns=[] if confounds is None else [str(c) for c in confounds.columns],
        strategy=strategy,
        band_pass=band_pass,
    )


def _clean(
    body: np.ndarray,
    *,
    design: np.ndarray | None,
    sample_mask: np.ndarray,
    t_r: float,
    high_pass: float | None,
    low_pass: float | None,
) -> np.ndarray:
    """nilearn.signal.clean with the settings of this module; returns the kept frames only."""
    from nilearn import signal

    use_filter = high_pass is not None or low_pass is not None
    mask = None if sample_mask.size == body.shape[0] else sample_mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        return signal.clean(
            body,
            confounds=design,
            sample_mask=mask,
            t_r=t_r,
            detrend=False,
            standardize=None,
            standardize_confounds=True,
            filter="butterworth" if use_filter else False,
            high_pass=high_pass,
            low_pass=low_pass,
            ensure_finite=False,
        )


def check_confounds(confounds_file: str | Path, *, n_frames: int, strategy: str) -> None:
    """Check, before any work, that a run's confounds can serve ``strategy``, as :func:`denoise` reads them.

    Parameters
    ----------
    confounds_file : str or Path
        fMRIPrep ``*_desc-confounds_timeseries.tsv``.
    n_frames : int
        Volumes of the run's BOLD series (the table needs one row per volume).
    strategy : {"simple", "scrubbing", "compcor", "none"}

    Raises
    ------
    InputDataError
        Wrong row count, unreadable table, or columns the preset needs are missing.
    MissingInputError
        The file (or, for ``compcor``, its JSON sidecar) does not exist.
    """
    _read_confounds_table(confounds_file, n_frames)
    if strategy != "none":
        _load_preset(confounds_file, strategy)


def _read_confounds_table(confounds_file: str | Path, n_frames: int) -> pd.DataFrame:
    """The confounds TSV, checked against the run length."""
    path = Path(confounds_file)
    if not path.is_file():
        raise MissingInputError(
            f"{path}: the confounds file does not exist; fMRIPrep writes it beside the "
            "BOLD series as *_desc-confounds_timeseries.tsv."
        )
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except ValueError as exc:  # pandas' ParserError and EmptyDataError, and UnicodeDecodeError
        raise InputDataError(
            f"{path}: cannot be read as a tab-separated table ({exc}); restore fMRIPrep's confounds file."
        ) from None
    if len(table) != n_frames:
        raise InputDataError(
            f"{path}: the confounds table has {len(table)} rows but the BOLD series has "
            f"{n_frames} volumes; use the confounds file of the same run."
        )
    return table


def _non_steady_state_frames(raw: pd.DataFrame | None) -> np.ndarray:
    """Frames flagged by any non_steady_state_outlier column."""
    if raw is None:
        return np.array([], dtype=int)
    columns = [c for c in raw.columns if c.startswith(NON_STEADY_STATE_PREFIX)]
    if not columns:
        return np.array([], dtype=int)
    return np.flatnonzero(raw[columns].fillna(0).to_numpy().sum(axis=1) > 0)


def _load_preset(
    confounds_file: str | Path, strategy: str, fd_threshold: float | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Run nilearn's preset loader on a confounds file whatever its name.

    nilearn finds the confounds from the BOLD file's name, in the same folder. The file (and its JSON) are
    linked into a private folder under a canonical name, so any confounds path works.
    """
    source = Path(confounds_file).resolve()
    with tempfile.TemporaryDirectory(prefix="bsym-confounds-") as staging:
        return _load_preset_staged(source, Path(staging), strategy, fd_threshold)


def _load_preset_staged(
    source: Path, staging: Path, strategy: str, fd_threshold: float | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    tsv = staging / "sub-x_desc-confounds_timeseries.tsv"
    _link(source, tsv)
    sidecar = source.with_name(source.name.replace(".tsv", ".json"))
    if sidecar.is_file():
        _link(sidecar, tsv.with_suffix(".json"))
    elif strategy == "compcor":
        raise MissingInputError(
            f"{sidecar}: the compcor strategy needs the confounds JSON sidecar (it says "
            "which components are white matter / CSF); copy it from the fMRIPrep output."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            options = {} if fd_threshold is None else {"fd_threshold": fd_threshold}
            confounds, sample_mask = load_confounds_strategy(
                str(staging / "sub-x_desc-preproc_bold.nii.gz"), denoise_strategy=strategy, **options
            )
    except ValueError as exc:
        raise InputDataError(
            f"{source}: cannot build the {strategy!r} confounds: {exc} Use a strategy "
            "whose columns the file has (--denoise-strategy simple or none)."
        ) from None
    return confounds, None if sample_mask is None else np.asarray(sample_mask, dtype=int)


def _link(source: Path, target: Path) -> None:
    """Point ``target`` at ``source`` (a symlink)."""
    target.symlink_to(source)
