"""Inference over many windows: subject-level means of the outputs, and masked-region reconstruction errors.

Every consumer embeds through these two functions: the app's participant and study embeddings
(``pipelines/model/embed.py``), fine-tuning's frozen-encoder features (``brainsymphony/finetune.py``) and
pretraining's held-out score (``brainsymphony/pretraining/trainer.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from brainsymphony.model import BrainSymphony, BrainSymphonyOutput

#: Embedding kinds of :class:`~brainsymphony.model.BrainSymphonyOutput` averaged by :func:`window_means`.
EMBEDDINGS = ("functional", "structural", "fused", "gates")
#: Attention maps averaged when asked for, and the output fields they come from.
ATTENTION = {
    "spatial": "spatial_attention",
    "temporal": "temporal_attention",
    "perceiver_region": "perceiver_region_attention",
    "perceiver_time": "perceiver_time_attention",
    "structural": "structural_attention",
}


@dataclass
class WindowMeans:
    """Outputs averaged over each subject's windows (float64).

    Attributes
    ----------
    embeddings : dict of str to ndarray, shape (S, R, D)
        ``functional``, ``structural``, ``fused``, ``gates``: those the model returned.
    attention : dict of str to ndarray, shape (S, ...)
        ``spatial`` (L, H, R, R), ``temporal`` (L, H, T, T), ``structural`` (L, H, R, R), ``perceiver_region``
        (R, R), ``perceiver_time`` (R, T) per subject; empty unless asked for.
    counts : ndarray of int, shape (S,)
        Windows of each subject.
    """

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _maps(out: BrainSymphonyOutput) -> dict[str, torch.Tensor]:
    """The attention maps of a batch, each with the batch first."""
    maps = {}
    for name, attribute in ATTENTION.items():
        value = getattr(out, attribute)
        if value is not None:
            maps[name] = torch.stack(value, dim=1) if isinstance(value, list) else value
    return maps


def window_means(
    model: BrainSymphony,
    fmri: np.ndarray | None,
    sc: np.ndarray | None,
    owner: np.ndarray,
    *,
    n_subjects: int,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    attention: bool = False,
) -> WindowMeans:
    """Run ``model`` over N windows in batches and average its outputs per subject.

    Parameters
    ----------
    model : BrainSymphony
    fmri : ndarray, shape (N, R, T), or None
        Scaled windows; None for structural inputs only (then each row of ``owner`` is one pass).
    sc : ndarray, shape (S, R, R), or None
        Each subject's signed connectome; window ``i`` is paired with ``sc[owner[i]]``.
    owner : ndarray of int, shape (N,)
        Subject of each window, in ``range(n_subjects)``.
    n_subjects : int
    batch_size : int
        Windows per forward pass (consecutive windows; a batch may mix subjects).
    device : str or torch.device
    attention : bool
        Also average the attention maps (explicit attention: slower).

    Returns
    -------
    WindowMeans
    """
    owner = np.asarray(owner, dtype=np.int64)
    model = model.to(device).eval()
    sc_t = None if sc is None else torch.as_tensor(sc, dtype=torch.float32, device=device)
    totals: dict[str, dict[str, np.ndarray]] = {"embeddings": {}, "attention": {}}
    counts = np.bincount(owner, minlength=n_subjects)
    with torch.inference_mode():
        for start in range(0, len(owner), batch_size):
            rows = owner[start : start + batch_size]
            fmri_b = (
                None
                if fmri is None
                else torch.as_tensor(fmri[start : start + batch_size], dtype=torch.float32, device=device)
            )
            sc_b = None
            if sc_t is not None:  # one subject: its connectome shared by the batch, as a view
                sc_b = (
                    sc_t[int(rows[0])].expand(len(rows), -1, -1)
                    if np.all(rows == rows[0])
                    else sc_t[torch.as_tensor(rows, device=device)]
                )
            out = model(fmri=fmri_b, sc=sc_b, attention=True if attention else None)
            values = {name: getattr(out, name) for name in EMBEDDINGS if getattr(out, name) is not None}
            for group, batch in (("embeddings", values), ("attention", _maps(out) if attention else {})):
                for name, tensor in batch.items():
                    array = tensor.float().cpu().numpy()
                    total = totals[group].setdefault(name, np.zeros((n_subjects, *array.shape[1:])))
                    for subject in np.unique(rows):
                        total[subject] += array[rows == subject].astype(np.float64).sum(axis=0)
    scale = np.maximum(counts, 1).reshape(-1, 1)
    return WindowMeans(
        **{
            group: {name: total / scale.reshape(-1, *([1] * (total.ndim - 1))) for name, total in found.items()}
            for group, found in totals.items()
        },
        counts=counts,
    )


def masked_region_errors(
    reconstruct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    windows: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Squared errors of each region's series reconstructed while the region was hidden.

    Regions are split into ``folds`` interleaved groups of a seeded permutation; each group is hidden in
    every window in turn (its series replaced by the context path's mask token) and scored on exactly
    those regions.

    Parameters
    ----------
    reconstruct : callable
        ``(fmri (B, R, T), region_mask (B, R) bool) -> reconstruction (B, R, T)``.
    windows : ndarray, shape (W, R, T)
        Scaled windows, the truth.
    folds, seed, batch_size : int
    device : str or torch.device

    Returns
    -------
    sse, sst : ndarray, shape (R,)
        Sum of squared reconstruction errors, and sum of squares about the region's mean, over windows and
        time. ``1 - sse / sst`` is the region's R^2; ``1 - sse.sum() / sst.sum()`` the pooled one.
    """
    n_windows, n_regions, _ = windows.shape
    order = np.random.default_rng(seed).permutation(n_regions)
    truth = windows.astype(np.float64)
    sse = np.zeros(n_regions)
    with torch.inference_mode():
        for fold in range(folds):
            regions = np.sort(order[fold::folds])
            for start in range(0, n_windows, batch_size):
                batch = torch.as_tensor(windows[start : start + batch_size], dtype=torch.float32, device=device)
                mask = torch.zeros(batch.shape[:2], dtype=torch.bool, device=device)
                mask[:, regions] = True
                recon = reconstruct(batch, mask).float().cpu().numpy()
                diff = recon[:, regions] - truth[start : start + batch_size][:, regions]
                sse[regions] += (diff**2).sum(axis=(0, 2))
    sst = ((truth - truth.mean(axis=(0, 2), keepdims=True)) ** 2).sum(axis=(0, 2))
    return sse, sst
