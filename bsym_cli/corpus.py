"""Training corpora for ``bsym pretrain`` / ``bsym finetune``: read cached model inputs, or simulate one.

Three sources give the same in-memory :class:`Corpus`:

* a **work directory** (``-w`` of a participant run): every ``sub-<s>/model/<label>_model_input.npz`` the model
  stage cached (``windows`` (W, R, T) unscaled, NaN rows for n/a parcels; ``sc`` (R, R) or (0, 0); ``labels``;
  ``t_r``), any number of participants;
* a **corpus file** ``*.npz`` with ``windows`` (N, R, T) float32 unscaled series at one TR, optional ``sc``
  (N, R, R) signed connectome of each window's subject, optional ``subject`` (N,) subject ids (windows with the
  same id are one subject; default: every window its own subject), optional ``t_r`` () and ``labels`` (R,);
* the **demo-sim** simulation (:func:`simulate_corpus`): Hopf-network BOLD on varied distance-rule connectomes
  of the demo atlas, varied TR and noise, resampled to the target TR; streamline counts and parcel volumes turned
  into the signed connectome exactly as DESIGN.md section 4 does.

Series are robust-scaled per subject (``--scaling subject``, the app's default) when turned into a
:class:`brainsymphony.pretrain.TrainingSet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bsym_cli.errors import InputDataError, MissingInputError
from bsym_cli.logs import get_logger

#: Glob of the cached model inputs inside a work directory.
WORK_DIR_GLOB = "sub-*/model/*_model_input.npz"
#: TR choices (s) of the simulated acquisitions.
SIMULATED_TRS = (0.72, 0.8, 1.0, 1.5, 2.0)


@dataclass
class Corpus:
    """Unscaled windows and connectomes of several subjects.

    Attributes
    ----------
    windows : ndarray, shape (N, R, T), float32, or None
        Unscaled series; NaN rows for n/a parcels.
    window_subject : ndarray of int, shape (N,)
        Row of ``subject_ids`` of each window.
    sc : ndarray, shape (S, R, R), float32, or None
        Signed connectome per subject; NaN-filled for a subject without one.
    subject_ids : list of str
        S subject labels (without ``sub-``).
    t_r : float or None
        TR of the windows, in s.
    labels : ndarray of int, shape (R,), or None
        Atlas indices of the rows.
    covariates : dict of str to ndarray, shape (S,)
        Per-subject values known to the corpus (``age`` ... for demo-sim).
    """

    windows: np.ndarray | None
    window_subject: np.ndarray
    sc: np.ndarray | None
    subject_ids: list[str]
    t_r: float | None = None
    labels: np.ndarray | None = None
    covariates: dict[str, np.ndarray] = field(default_factory=dict)

    def training_set(self, *, functional: bool, structural: bool):
        """Scale per subject and keep the subjects that have every modality needed.

        Parameters
        ----------
        functional, structural : bool
            Which modalities the model uses.

        Returns
        -------
        brainsymphony.pretrain.TrainingSet
            ``fmri`` (N', R, T) scaled float32, ``sc`` (S, R, R), ``subject`` (N',).
        """
        from brainsymphony.pretrain import TrainingSet

        has_sc = self._has_sc()
        if structural and not has_sc.any():
            raise InputDataError("the corpus has no structural connectomes but the model has a structural stream; "
                                 "use a functional model or a corpus with `sc`.")
        if not functional:
            keep = np.flatnonzero(has_sc)
            return TrainingSet(fmri=None, sc=self.sc[keep].astype(np.float32), subject=np.arange(keep.size))
        if self.windows is None or self.windows.shape[0] == 0:
            raise InputDataError("the corpus has no fMRI windows but the model has a functional stream; use a "
                                 "structural model or a corpus with `windows`.")
        windows_ok = has_sc[self.window_subject] if structural else np.ones(len(self.window_subject), bool)
        dropped = sorted({self.subject_ids[s] for s in self.window_subject[~windows_ok]})
        if dropped:
            get_logger().warning("%d subject(s) without a connectome left out of multimodal training: %s",
                                 len(dropped), ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
        scaled = self.scaled_windows()[windows_ok]
        return TrainingSet(fmri=scaled, sc=None if not structural else self.sc.astype(np.float32),
                           subject=self.window_subject[windows_ok])

    def scaled_windows(self) -> np.ndarray:
        """Windows robust-scaled with each subject's own median/IQR; n/a regions 0. Shape (N, R, T), float32."""
        from pipelines.model.scaling import robust_statistics, scale_windows

        out = np.empty(self.windows.shape, np.float32)
        for subject in np.unique(self.window_subject):
            rows = np.flatnonzero(self.window_subject == subject)
            median, iqr = robust_statistics(self.windows[rows])
            out[rows] = scale_windows(self.windows[rows], median, iqr)[0]
        return out

    def _has_sc(self) -> np.ndarray:
        if self.sc is None:
            return np.zeros(len(self.subject_ids), bool)
        return np.isfinite(self.sc).all(axis=(1, 2)) & (np.abs(self.sc).sum(axis=(1, 2)) > 0)


def read_corpus(path: str | Path) -> Corpus:
    """A work directory or a corpus ``.npz`` file (see the module docstring).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Corpus
    """
    path = Path(path)
    if path.is_dir():
        return read_work_dir(path)
    if path.suffix == ".npz" and path.is_file():
        return read_corpus_file(path)
    raise MissingInputError(f"{path}: not a work directory or a corpus .npz file; pass the -w folder of a "
                            "participant run, or a .npz with 'windows' (N, R, T) (see docs/pretraining.md).")


def read_work_dir(work_dir: str | Path) -> Corpus:
    """Collect every participant's cached model inputs under a work directory.

    Parameters
    ----------
    work_dir : str or Path
        The ``-w`` folder of one or more ``bsym-app ... participant`` runs.

    Returns
    -------
    Corpus
        All windows of all runs; the first non-empty connectome of each participant.
    """
    work_dir = Path(work_dir)
    files = sorted(work_dir.glob(WORK_DIR_GLOB))
    if not files:
        raise MissingInputError(f"{work_dir}: no cached model inputs ({WORK_DIR_GLOB}); run `bsym-app ... "
                                "participant -w THIS_FOLDER` first (the model stage caches them).")
    by_subject: dict[str, list[Path]] = {}
    for file in files:
        by_subject.setdefault(file.parent.parent.name.removeprefix("sub-"), []).append(file)
    windows, owners, connectomes, labels, trs = [], [], [], None, set()
    for s, (_subject, paths) in enumerate(sorted(by_subject.items())):
        sc = None
        for file in paths:
            with np.load(file) as data:
                found = data["labels"].astype(int)
                if labels is None:
                    labels = found
                elif not np.array_equal(labels, found):
                    raise InputDataError(f"{file}: atlas labels differ from those of the other participants; "
                                         "pretrain on participants parcellated with one atlas.")
                w, c, t_r = data["windows"], data["sc"], float(data["t_r"])
            if w.ndim == 3 and w.shape[0] and w.shape[2]:
                windows.append(w.astype(np.float32))
                owners.append(np.full(w.shape[0], s))
                trs.add(round(t_r, 6))
            if sc is None and c.size:
                sc = c.astype(np.float32)
        connectomes.append(sc)
    _check_one_tr(trs, work_dir)
    return _assemble(windows, owners, connectomes, sorted(by_subject), labels, trs)


def read_corpus_file(path: str | Path) -> Corpus:
    """Read a corpus ``.npz`` (``windows`` (N, R, T), optional ``sc`` (N, R, R), ``subject``, ``t_r``, ``labels``).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Corpus
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if "windows" not in arrays and "sc" not in arrays:
        raise InputDataError(f"{path}: a corpus file needs 'windows' (N, R, T) and/or 'sc' (N, R, R); it has "
                             f"{sorted(arrays)}.")
    windows = arrays.get("windows")
    sc = arrays.get("sc")
    n = windows.shape[0] if windows is not None else sc.shape[0]
    if windows is not None and windows.ndim != 3:
        raise InputDataError(f"{path}: 'windows' has shape {windows.shape}; expected (N, R, T).")
    if sc is not None and (sc.ndim != 3 or sc.shape[0] != n or sc.shape[1] != sc.shape[2]):
        raise InputDataError(f"{path}: 'sc' has shape {sc.shape}; expected ({n}, R, R), one per window.")
    ids = arrays.get("subject", np.array([str(i) for i in range(n)]))
    if ids.shape != (n,):
        raise InputDataError(f"{path}: 'subject' has shape {ids.shape}; expected ({n},).")
    subject_ids, owner = np.unique(ids.astype(str), return_inverse=True)
    first = [int(np.flatnonzero(owner == s)[0]) for s in range(subject_ids.size)]
    t_r = float(arrays["t_r"]) if "t_r" in arrays else None
    return Corpus(windows=None if windows is None else windows.astype(np.float32), window_subject=owner,
                  sc=None if sc is None else sc[first].astype(np.float32),
                  subject_ids=[str(s) for s in subject_ids], t_r=t_r,
                  labels=arrays["labels"].astype(int) if "labels" in arrays else None)


def save_corpus_file(corpus: Corpus, path: str | Path) -> Path:
    """Write ``corpus`` in the corpus ``.npz`` format (``sc`` repeated per window).

    Parameters
    ----------
    corpus : Corpus
    path : str or Path

    Returns
    -------
    Path
    """
    from bsym_cli.atomic import atomic_path

    path = Path(path)
    arrays: dict[str, np.ndarray] = {"subject": np.asarray(corpus.subject_ids)[corpus.window_subject]}
    if corpus.windows is not None:
        arrays["windows"] = corpus.windows
    if corpus.sc is not None:
        arrays["sc"] = corpus.sc[corpus.window_subject]
    if corpus.t_r is not None:
        arrays["t_r"] = np.float64(corpus.t_r)
    if corpus.labels is not None:
        arrays["labels"] = np.asarray(corpus.labels, np.int32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def simulate_corpus(n_subjects: int, *, seed: int = 0, windows_per_subject: int = 1, n_timepoints: int = 200,
                    target_tr: float = 0.72) -> Corpus:
    """The ``demo-sim`` corpus: simulated subjects on the demo atlas (450 regions).

    Per subject (seeded by ``(seed, subject)``): age ~ U(20, 80) years sets the Hopf coupling
    (:func:`bsym_cli.demo.simulate.coupling_for_age`); a distance-rule connectome with density ~ U(0.10, 0.20),
    length constant ~ U(15, 25) mm and weight jitter ~ U(0.3, 0.5); BOLD at a TR drawn from
    :data:`SIMULATED_TRS` with dynamical noise ~ U(0.01, 0.04) and white measurement noise of U(0.1, 0.6) times
    each region's signal SD, resampled to ``target_tr`` (band-limited, as the app does) and cut into
    ``windows_per_subject`` windows of ``n_timepoints`` frames. Streamline counts are Poisson with mean
    ``total * w_ij / sum(w)`` (total ~ U(2e5, 1e6) streamlines); parcel volumes are the demo atlas's voxel counts
    (1 mm^3) times a per-subject head size factor ~ U(0.9, 1.1); the signed connectome is
    log10(count / ((V_i + V_j) / 2)) where count > 0, else 0 (DESIGN.md section 4).

    Parameters
    ----------
    n_subjects : int
    seed : int
    windows_per_subject : int
    n_timepoints : int
        T, frames per window at ``target_tr``.
    target_tr : float
        TR of the windows, in s.

    Returns
    -------
    Corpus
        ``covariates``: ``age``, ``acquisition_tr``, ``coupling``, ``measurement_noise``.
    """
    from bsym_cli.demo.atlas import build_demo_atlas
    from bsym_cli.demo.simulate import coupling_for_age, simulate_bold, simulate_connectome
    from pipelines.fmri.resample import resample_to_tr

    atlas = build_demo_atlas()
    indices = atlas.table["index"].to_numpy()
    volumes = np.bincount(atlas.labels.ravel().astype(np.int64), minlength=indices.max() + 1)[indices].astype(float)
    hemispheres = (atlas.hemispheres == "L").astype(int)
    n_regions, frames = len(indices), windows_per_subject * n_timepoints
    windows = np.empty((n_subjects * windows_per_subject, n_regions, n_timepoints), np.float32)
    sc = np.empty((n_subjects, n_regions, n_regions), np.float32)
    covariates = {k: np.empty(n_subjects) for k in ("age", "acquisition_tr", "coupling", "measurement_noise")}
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, s])
        age = rng.uniform(20.0, 80.0)
        weights = simulate_connectome(atlas.centroids, rng, decay_mm=rng.uniform(15.0, 25.0),
                                      density=rng.uniform(0.10, 0.20), jitter=rng.uniform(0.3, 0.5),
                                      hemispheres=hemispheres)
        t_r = float(rng.choice(SIMULATED_TRS))
        n_acquired = int(np.ceil(frames * target_tr / t_r)) + 8
        bold = simulate_bold(weights, t_r=t_r, n_frames=n_acquired, coupling=coupling_for_age(age), rng=rng,
                             noise=rng.uniform(0.01, 0.04))  # (R, n_acquired)
        level = rng.uniform(0.1, 0.6)
        bold = bold + level * bold.std(axis=1, keepdims=True) * rng.standard_normal(bold.shape)
        series = resample_to_tr(bold.T.astype(np.float64), t_r, target_tr)[:frames]  # (frames, R)
        windows[s * windows_per_subject:(s + 1) * windows_per_subject] = (
            series.T.reshape(n_regions, windows_per_subject, n_timepoints).transpose(1, 0, 2))
        sc[s] = signed_connectome(streamline_counts(weights, rng.uniform(2e5, 1e6), rng),
                                  volumes * rng.uniform(0.9, 1.1))
        for key, value in (("age", age), ("acquisition_tr", t_r), ("coupling", coupling_for_age(age)),
                           ("measurement_noise", level)):
            covariates[key][s] = value
    return Corpus(windows=windows, window_subject=np.repeat(np.arange(n_subjects), windows_per_subject), sc=sc,
                  subject_ids=[f"sim{s:04d}" for s in range(n_subjects)], t_r=target_tr, labels=indices,
                  covariates=covariates)


def streamline_counts(weights: np.ndarray, total: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson streamline counts with mean ``total * w_ij / sum_{i<j} w``, symmetric, zero diagonal.

    Parameters
    ----------
    weights : ndarray, shape (R, R)
        Symmetric non-negative connection weights.
    total : float
        Expected number of streamlines.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int, shape (R, R)
    """
    upper = np.triu(weights, 1)
    counts = np.triu(rng.poisson(total * upper / max(upper.sum(), 1e-12)), 1)
    return counts + counts.T


def signed_connectome(counts: np.ndarray, volumes: np.ndarray) -> np.ndarray:
    """``log10(count / ((V_i + V_j) / 2))`` where count > 0, else 0 (DESIGN.md section 4).

    Parameters
    ----------
    counts : ndarray, shape (R, R)
        Streamline counts.
    volumes : ndarray, shape (R,)
        Parcel volumes, in mm^3.

    Returns
    -------
    ndarray, shape (R, R), float32
    """
    mean_volume = (volumes[:, None] + volumes[None, :]) / 2.0
    with np.errstate(divide="ignore"):
        signed = np.where(counts > 0, np.log10(np.maximum(counts, 1) / mean_volume), 0.0)
    return signed.astype(np.float32)


def _check_one_tr(trs: set[float], where: Path) -> None:
    if len(trs) > 1:
        raise InputDataError(f"{where}: the cached windows have different TRs {sorted(trs)}; they were made for "
                             "different weight bundles. Pretrain on runs made with one bundle (one TR).")


def _assemble(windows: list[np.ndarray], owners: list[np.ndarray], connectomes: list[np.ndarray | None],
              subject_ids: list[str], labels: np.ndarray | None, trs: set[float]) -> Corpus:
    n_regions = len(labels)
    sc = None
    if any(c is not None for c in connectomes):
        sc = np.full((len(connectomes), n_regions, n_regions), np.nan, np.float32)
        for s, c in enumerate(connectomes):
            if c is not None:
                sc[s] = np.nan_to_num(c)
    return Corpus(windows=np.concatenate(windows) if windows else None,
                  window_subject=np.concatenate(owners) if owners else np.zeros(0, int), sc=sc,
                  subject_ids=subject_ids, t_r=next(iter(trs)) if trs else None, labels=labels)
