"""Training corpora for ``bsym pretrain`` / ``bsym finetune``: read cached model inputs, or simulate one.

Three sources give the same in-memory :class:`Corpus`:

* a **work directory** (``-w`` of a participant run): every ``sub-<s>/model/<label>_model_input.npz`` the model
  stage cached (``windows`` (W, R, T) unscaled, NaN rows for n/a parcels; ``sc`` (R, R) or (0, 0); ``labels``;
  ``t_r``), any number of participants;
* a **corpus file** ``*.npz`` with ``windows`` (N, R, T) float32 unscaled series at one TR, optional ``sc``
  (N, R, R) signed connectome of each window's subject, optional ``subject`` (N,) subject ids (windows with the
  same id are one subject; default: every window its own subject), optional ``t_r`` () and ``labels`` (R,);
* the **demo-sim** simulation (``simulation.corpus.simulate_corpus``).

Series are robust-scaled per subject (``--scaling subject``, the app's default) when turned into a
:class:`brainsymphony.pretraining.TrainingSet`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.errors import InputDataError, MissingInputError
from pipelines.model.inputs import WORK_DIR_GLOB, load_model_inputs

LOGGER = logging.getLogger("bsym")


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
    atlas, labels_sha256 : str or None
        The atlas of the rows and its labels' fingerprint, when the corpus knows them.
    """

    windows: np.ndarray | None
    window_subject: np.ndarray
    sc: np.ndarray | None
    subject_ids: list[str]
    t_r: float | None = None
    labels: np.ndarray | None = None
    covariates: dict[str, np.ndarray] = field(default_factory=dict)
    atlas: str | None = None
    labels_sha256: str | None = None

    def training_set(self, *, functional: bool, structural: bool):
        """Scale per subject and keep the subjects that have every modality needed.

        Parameters
        ----------
        functional, structural : bool
            Which modalities the model uses.

        Returns
        -------
        brainsymphony.pretraining.TrainingSet
            ``fmri`` (N', R, T) scaled float32, ``sc`` (S, R, R), ``subject`` (N',).
        """
        from brainsymphony.pretraining import TrainingSet

        has_sc = self._has_sc()
        if structural and not has_sc.any():
            raise InputDataError(
                "the corpus has no structural connectomes but the model has a structural stream; "
                "use a functional model or a corpus with `sc`."
            )
        if not functional:
            if self.sc is None:  # then the model has no stream at all: a structural one was refused above
                raise ValueError("a model without a functional stream needs a structural one")
            keep = np.flatnonzero(has_sc)
            return TrainingSet(fmri=None, sc=self.sc[keep].astype(np.float32), subject=np.arange(keep.size))
        if self.windows is None or self.windows.shape[0] == 0:
            raise InputDataError(
                "the corpus has no fMRI windows but the model has a functional stream; use a "
                "structural model or a corpus with `windows`."
            )
        windows_ok = has_sc[self.window_subject] if structural else np.ones(len(self.window_subject), bool)
        dropped = sorted({self.subject_ids[s] for s in self.window_subject[~windows_ok]})
        if dropped:
            LOGGER.warning(
                "%d subject(s) without a connectome left out of multimodal training: %s",
                len(dropped),
                ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""),
            )
        scaled = self.scaled_windows()[windows_ok]
        # self.sc is None only without a structural stream (refused above otherwise)
        return TrainingSet(
            fmri=scaled,
            sc=None if not structural or self.sc is None else self.sc.astype(np.float32),
            subject=self.window_subject[windows_ok],
        )

    def scaled_windows(self) -> np.ndarray:
        """Windows robust-scaled with each subject's own median/IQR; n/a regions 0. Shape (N, R, T), float32."""
        from pipelines.model.scaling import robust_statistics, scale_windows

        windows = self.windows
        if windows is None:
            raise InputDataError("the corpus has no fMRI windows to scale.")
        out = np.empty(windows.shape, np.float32)
        for subject in np.unique(self.window_subject):
            rows = np.flatnonzero(self.window_subject == subject)
            median, iqr = robust_statistics(windows[rows])
            out[rows] = scale_windows(windows[rows], median, iqr)[0]
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
    raise MissingInputError(
        f"{path}: not a work directory or a corpus .npz file; pass the -w folder of a "
        "participant run, or a .npz with 'windows' (N, R, T) (see docs/pretraining.md)."
    )


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
        raise MissingInputError(
            f"{work_dir}: no cached model inputs ({WORK_DIR_GLOB}); run `bsym-app ... "
            "participant -w THIS_FOLDER` first (the model stage caches them)."
        )
    by_subject: dict[str, list[Path]] = {}
    for file in files:
        by_subject.setdefault(file.parent.parent.name.removeprefix("sub-"), []).append(file)
    windows, owners, connectomes, labels, trs = [], [], [], None, set()
    for s, (_subject, paths) in enumerate(sorted(by_subject.items())):
        sc = None
        for file in paths:
            cached = load_model_inputs(file)
            if labels is None:
                labels = cached.labels
            elif not np.array_equal(labels, cached.labels):
                raise InputDataError(
                    f"{file}: atlas labels differ from those of the other participants; "
                    "pretrain on participants parcellated with one atlas."
                )
            if cached.windows is not None:
                windows.append(cached.windows.astype(np.float32))
                owners.append(np.full(cached.windows.shape[0], s))
                trs.add(np.nan if cached.t_r is None else round(cached.t_r, 6))
            if sc is None and cached.sc is not None:
                sc = cached.sc.astype(np.float32)
        connectomes.append(sc)
    if labels is None:  # not reached: `files` is not empty and every cached file has labels
        raise MissingInputError(f"{work_dir}: no cached model inputs ({WORK_DIR_GLOB}).")
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
    windows = arrays.get("windows")
    sc = arrays.get("sc")
    if windows is not None:
        n = windows.shape[0]
    elif sc is not None:
        n = sc.shape[0]
    else:
        raise InputDataError(
            f"{path}: a corpus file needs 'windows' (N, R, T) and/or 'sc' (N, R, R); it has {sorted(arrays)}."
        )
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
    return Corpus(
        windows=None if windows is None else windows.astype(np.float32),
        window_subject=owner,
        sc=None if sc is None else sc[first].astype(np.float32),
        subject_ids=[str(s) for s in subject_ids],
        t_r=t_r,
        labels=arrays["labels"].astype(int) if "labels" in arrays else None,
    )


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
    from pipelines.atomic import atomic_path

    path = Path(path)
    arrays: dict[str, np.ndarray | np.generic] = {"subject": np.asarray(corpus.subject_ids)[corpus.window_subject]}
    if corpus.windows is not None:
        arrays["windows"] = corpus.windows
    if corpus.sc is not None:
        arrays["sc"] = corpus.sc[corpus.window_subject]
    if corpus.t_r is not None:
        arrays["t_r"] = np.float64(corpus.t_r)
    if corpus.labels is not None:
        arrays["labels"] = np.asarray(corpus.labels, np.int32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, allow_pickle=True, **arrays)
    return path


def _check_one_tr(trs: set[float], where: Path) -> None:
    if len(trs) > 1:
        raise InputDataError(
            f"{where}: the cached windows have different TRs {sorted(trs)}; they were made for "
            "different weight bundles. Pretrain on runs made with one bundle (one TR)."
        )


def _assemble(
    windows: list[np.ndarray],
    owners: list[np.ndarray],
    connectomes: list[np.ndarray | None],
    subject_ids: list[str],
    labels: np.ndarray,
    trs: set[float],
) -> Corpus:
    n_regions = len(labels)
    sc = None
    if any(c is not None for c in connectomes):
        sc = np.full((len(connectomes), n_regions, n_regions), np.nan, np.float32)
        for s, c in enumerate(connectomes):
            if c is not None:
                sc[s] = np.nan_to_num(c)
    return Corpus(
        windows=np.concatenate(windows) if windows else None,
        window_subject=np.concatenate(owners) if owners else np.zeros(0, int),
        sc=sc,
        subject_ids=subject_ids,
        t_r=next(iter(trs)) if trs else None,
        labels=labels,
    )
