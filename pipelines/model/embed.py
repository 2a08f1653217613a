"""Run BrainSymphony on one participant's windows and aggregate what comes out.

Runs in the main process (no CUDA inside forked Nipype workers). Every window goes through the
network in batches; embeddings, gates and attention maps are averaged over windows on the fly, so
memory does not grow with the number of windows.
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
    window_embeddings : dict of str to ndarray, shape (W, R, D)
        Per-window embeddings (``functional``, ``fused``), for caching and study-level work.
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
    window_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    reconstruction_r2: np.ndarray | None = None
    n_windows: int = 0

    def subject_vector(self) -> dict[str, np.ndarray]:
        """Mean over regions of each available embedding: the subject-level feature vectors (D,)."""
        return {k: v.mean(axis=0) for k, v in (("fused", self.fused), ("functional", self.functional),
                                                 ("structural", self.structural)) if v is not None}


class _Mean:
    """Running mean of arrays (float64), updated batch by batch."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, batch: np.ndarray) -> None:
        summed = batch.astype(np.float64).sum(axis=0)
        self.total = summed if self.total is None else self.total + summed
        self.count += batch.shape[0]

    @property
    def value(self) -> np.ndarray | None:
        return None if self.total is None else self.total / self.count


def embed_participant(model, windows: np.ndarray | None, sc: np.ndarray | None, *, batch_size: int = 8,
                      device: str = "cpu", attention: bool = True, reconstruction_folds: int = 5,
                      seed: int = 0) -> ParticipantEmbedding:
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
    import torch

    cfg = model.config
    if (windows is None or not cfg.has_functional) and (sc is None or not cfg.has_structural):
        raise ValueError(f"nothing to embed: this {cfg.mode} model got no usable windows or connectome")
    model = model.to(device).eval()
    sc_t = None if sc is None or not cfg.has_structural else torch.as_tensor(sc, dtype=torch.float32, device=device)
    batches = [None] if windows is None or not cfg.has_functional else [
        windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]
    means: dict[str, _Mean] = {}
    per_window: dict[str, list[np.ndarray]] = {"functional": [], "fused": []}
    maps = True if attention else None
    with torch.inference_mode():
        for batch in batches:
            n = 1 if batch is None else len(batch)
            fmri = None if batch is None else torch.as_tensor(batch, dtype=torch.float32, device=device)
            sc_b = None if sc_t is None else sc_t.expand(n, -1, -1)
            out = model(fmri=fmri, sc=sc_b, attention=maps)
            for name in ("functional", "structural", "fused", "gates"):
                value = getattr(out, name)
                if value is not None:
                    means.setdefault(name, _Mean()).add(value.float().cpu().numpy())
                    if name in per_window:
                        per_window[name].append(value.float().cpu().numpy())
            for name, value in (("spatial", out.spatial_attention), ("temporal", out.temporal_attention),
                                ("structural_attention", out.structural_attention)):
                if value is not None:
                    means.setdefault(name, _Mean()).add(torch.stack(value, dim=1).float().cpu().numpy())
            for name, value in (("perceiver_region", out.perceiver_region_attention),
                                ("perceiver_time", out.perceiver_time_attention)):
                if value is not None:
                    means.setdefault(name, _Mean()).add(value.float().cpu().numpy())
    result = ParticipantEmbedding(
        functional=_value(means, "functional"), structural=_value(means, "structural"),
        fused=_value(means, "fused"), gates=_value(means, "gates"),
        window_embeddings={k: np.concatenate(v) for k, v in per_window.items() if v},
        n_windows=0 if windows is None else len(windows),
    )
    for name, key in (("spatial", "spatial"), ("temporal", "temporal"), ("perceiver_region", "perceiver_region"),
                      ("perceiver_time", "perceiver_time"), ("structural_attention", "structural")):
        if name in means:
            result.attention[key] = means[name].value
    if cfg.has_functional and windows is not None and reconstruction_folds:
        result.reconstruction_r2 = masked_reconstruction_r2(model, windows, sc, folds=reconstruction_folds,
                                                            batch_size=batch_size, device=device, seed=seed)
    return result


def _value(means: dict[str, _Mean], name: str) -> np.ndarray | None:
    return means[name].value if name in means else None


def masked_reconstruction_r2(model, windows: np.ndarray, sc: np.ndarray | None, *, folds: int = 5,
                             batch_size: int = 8, device: str = "cpu", seed: int = 0) -> np.ndarray:
    """R^2 per region of the Perceiver's reconstruction of regions it could not see.

    Regions are split into ``folds`` interleaved groups (seeded permutation); each group's series are
    replaced by the context path's mask token (``entry_mask``) in every window, and the reconstruction of
    exactly those regions is scored against the scaled input.

    Returns
    -------
    ndarray, shape (R,)
        ``1 - SSE / SST`` over windows and time; NaN for a region with no variance.
    """
    import torch

    n_windows, n_regions, n_time = windows.shape
    order = np.random.default_rng(seed).permutation(n_regions)
    sse = np.zeros(n_regions)
    truth = windows.astype(np.float64)
    sst = ((truth - truth.mean(axis=(0, 2), keepdims=True)) ** 2).sum(axis=(0, 2))
    with torch.inference_mode():
        for fold in range(folds):
            regions = np.sort(order[fold::folds])
            for start in range(0, n_windows, batch_size):
                batch = torch.as_tensor(windows[start:start + batch_size], dtype=torch.float32, device=device)
                mask = torch.zeros(batch.shape, dtype=torch.bool, device=device)
                mask[:, regions, :] = True
                sc_b = None
                if sc is not None and model.config.has_structural:
                    sc_b = torch.as_tensor(sc, dtype=torch.float32, device=device).expand(len(batch), -1, -1)
                recon = model(fmri=batch, sc=sc_b, entry_mask=mask).reconstruction.float().cpu().numpy()
                diff = recon[:, regions, :] - truth[start:start + batch_size][:, regions, :]
                sse[regions] += (diff ** 2).sum(axis=(0, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / sst, np.nan)


def embed_many(model, participants: list[tuple[np.ndarray | None, np.ndarray | None]], *, batch_size: int = 32,
               device: str = "cpu") -> list[dict[str, np.ndarray]]:
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
    import torch

    cfg = model.config
    model = model.to(device).eval()
    items: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []
    for index, (windows, sc) in enumerate(participants):
        sc = sc if cfg.has_structural else None
        if windows is not None and len(windows) and cfg.has_functional:
            items += [(index, w, sc) for w in windows]
        elif sc is not None:
            items.append((index, None, sc))
    sums: list[dict[str, np.ndarray]] = [{} for _ in participants]
    counts = np.zeros(len(participants), int)
    groups: dict[tuple[bool, bool], list] = {}
    for item in items:  # batches need the same inputs present
        groups.setdefault((item[1] is not None, item[2] is not None), []).append(item)
    with torch.inference_mode():
        for (has_fmri, has_sc), group in sorted(groups.items()):
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                fmri = torch.as_tensor(np.stack([c[1] for c in chunk]), device=device) if has_fmri else None
                sc = torch.as_tensor(np.stack([c[2] for c in chunk]), dtype=torch.float32,
                                     device=device) if has_sc else None
                out = model(fmri=fmri, sc=sc)
                for name in ("functional", "structural", "fused"):
                    value = getattr(out, name)
                    if value is None:
                        continue
                    value = value.float().cpu().numpy().astype(np.float64)
                    for row, (index, _, _) in zip(value, chunk, strict=True):
                        sums[index][name] = sums[index].get(name, 0.0) + row
                for index, _, _ in chunk:
                    counts[index] += 1
    return [{k: v / counts[i] for k, v in s.items()} for i, s in enumerate(sums)]
