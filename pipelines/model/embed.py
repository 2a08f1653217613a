"""Run BrainSymphony on one participant's windows, or on many participants, and average what comes out.

Runs in the main process (no CUDA inside forked Nipype workers). Windows go through the network in
batches (``brainsymphony/inference.py``); embeddings, gates and attention maps are summed batch by batch, so
memory holds one batch and the running sums, whatever the number of windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ParticipantEmbedding:
    """A participant's model outputs, averaged over windows.

    Attributes
    ----------
    functional, structural, fused, gates : ndarray, shape (R, D), or None
        Region embeddings per stream (None where the modality is absent) and mean fusion gates.
    attention : dict of str to ndarray
        ``spatial`` (L, H, R, R), ``temporal`` (L, H, T, T), ``perceiver_region`` (R, R) (query region x key
        region, summed over time), ``perceiver_time`` (R, T), ``structural`` (L, H, R, R) signed; means over
        windows.
    reconstruction_r2 : ndarray, shape (R,), or None
        R^2 of each region's series reconstructed while the region was masked.
    n_windows : int
    """

    functional: np.ndarray | None = None
    structural: np.ndarray | None = None
    fused: np.ndarray | None = None
    gates: np.ndarray | None = None
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    reconstruction_r2: np.ndarray | None = None
    n_windows: int = 0

    def subject_vector(self) -> dict[str, np.ndarray]:
        """Mean over regions of each available embedding: the subject-level feature vectors (D,)."""
        return {
            k: v.mean(axis=0)
            for k, v in (("fused", self.fused), ("functional", self.functional), ("structural", self.structural))
            if v is not None
        }


def embed_participant(
    model,
    windows: np.ndarray | None,
    sc: np.ndarray | None,
    *,
    batch_size: int = 8,
    device: str = "cpu",
    attention: bool = True,
    reconstruction_folds: int = 5,
    seed: int = 0,
) -> ParticipantEmbedding:
    """Embed a participant.

    Parameters
    ----------
    model : brainsymphony.BrainSymphony
        In eval mode. A multimodal model embeds whichever modality is given (fused only with both).
    windows : ndarray, shape (W, R, T), or None
        Robust-scaled windows (n/a regions already set to 0).
    sc : ndarray, shape (R, R), or None
        Signed structural connectome, shared by all windows.
    batch_size : int
        Windows per forward pass.
    device : str
        ``cpu`` or ``cuda``.
    attention : bool
        Also average the attention maps (slower: explicit attention).
    reconstruction_folds : int
        Regions are masked in this many interleaved groups to score their reconstruction (0 = skip).
    seed : int
        Seed of the region grouping.

    Returns
    -------
    ParticipantEmbedding
    """
    from brainsymphony.inference import window_means

    cfg = model.config
    windows = windows if cfg.has_functional else None
    sc = sc if cfg.has_structural else None
    if windows is None and sc is None:
        raise ValueError(f"nothing to embed: this {cfg.mode} model got no usable windows or connectome")
    n_rows = 1 if windows is None else len(windows)
    means = window_means(
        model,
        windows,
        None if sc is None else sc[None],
        np.zeros(n_rows, np.int64),
        n_subjects=1,
        batch_size=batch_size,
        device=device,
        attention=attention,
    )
    found = {name: values[0] for name, values in means.embeddings.items()}
    result = ParticipantEmbedding(
        functional=found.get("functional"),
        structural=found.get("structural"),
        fused=found.get("fused"),
        gates=found.get("gates"),
        attention={name: values[0] for name, values in means.attention.items()},
        n_windows=0 if windows is None else len(windows),
    )
    if windows is not None and reconstruction_folds:
        result.reconstruction_r2 = masked_reconstruction_r2(
            model, windows, folds=reconstruction_folds, batch_size=batch_size, device=device, seed=seed
        )
    return result


def masked_reconstruction_r2(
    model, windows: np.ndarray, *, folds: int = 5, batch_size: int = 8, device: str = "cpu", seed: int = 0
) -> np.ndarray:
    """R^2 per region of the Perceiver's reconstruction of regions it could not see.

    Parameters
    ----------
    model : brainsymphony.BrainSymphony
        With a functional stream (the reconstruction does not depend on the connectome).
    windows : ndarray, shape (W, R, T)
        Scaled windows, the truth.
    folds, batch_size, seed : int
        See ``brainsymphony.inference.masked_region_errors``.
    device : str

    Returns
    -------
    ndarray, shape (R,)
        ``1 - SSE / SST`` over windows and time; NaN for a region with no variance.
    """
    from brainsymphony.inference import masked_region_errors

    def reconstruct(fmri, region_mask):
        return model(fmri=fmri, entry_mask=region_mask.unsqueeze(-1).expand_as(fmri)).reconstruction

    sse, sst = masked_region_errors(reconstruct, windows, folds=folds, seed=seed, batch_size=batch_size, device=device)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / sst, np.nan)


def embed_many(
    model, participants: list[tuple[np.ndarray | None, np.ndarray | None]], *, batch_size: int = 32, device: str = "cpu"
) -> list[dict[str, np.ndarray]]:
    """Embed many participants in large batches that mix participants (no attention maps).

    Parameters
    ----------
    model : brainsymphony.BrainSymphony
    participants : list of (windows, sc)
        ``windows`` (W_i, R, T) scaled, or None; ``sc`` (R, R) or None. Windows of several participants share
        a batch; each window carries its own participant's connectome. A participant with no windows but a
        connectome is embedded once, structurally.
    batch_size : int
        Windows per forward pass.
    device : str

    Returns
    -------
    list of dict
        Per participant, ``functional``/``structural``/``fused`` region embeddings (R, D), means over windows.
    """
    from brainsymphony.inference import window_means

    cfg = model.config
    groups: dict[tuple[bool, bool], list[int]] = {}  # a batch needs the same inputs present in every row
    for index, (windows, sc) in enumerate(participants):
        has_fmri = windows is not None and len(windows) > 0 and cfg.has_functional
        has_sc = sc is not None and cfg.has_structural
        if has_fmri or has_sc:
            groups.setdefault((has_fmri, has_sc), []).append(index)
    results: list[dict[str, np.ndarray]] = [{} for _ in participants]
    for (has_fmri, has_sc), members in sorted(groups.items()):
        series = [w for i in members if (w := participants[i][0]) is not None] if has_fmri else []
        connectomes = [c for i in members if (c := participants[i][1]) is not None] if has_sc else []
        rows = [len(w) for w in series] if has_fmri else [1] * len(members)
        fmri = np.concatenate(series) if has_fmri else None
        sc = np.stack(connectomes) if has_sc else None
        means = window_means(
            model,
            fmri,
            sc,
            np.repeat(np.arange(len(members)), rows),
            n_subjects=len(members),
            batch_size=batch_size,
            device=device,
        )
        for position, index in enumerate(members):
            results[index] = {
                name: means.embeddings[name][position]
                for name in ("functional", "structural", "fused")
                if name in means.embeddings
            }
    return results
