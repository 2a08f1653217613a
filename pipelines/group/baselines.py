"""Baseline features of a probe: what the model's own inputs predict, scored beside the embeddings.

A probe of the embeddings means little alone: the connectomes the model reads may predict the target better.
The baselines are the functional connectivity edges, the signed structural connectome's edges, both, and a few
global summaries (mean FC, mean |SC|, SC density), each one row per participant (and session) like the
feature table.
"""

from __future__ import annotations

import numpy as np

#: Baseline feature sets, in the order they are reported.
BASELINES = ("FC edges", "SC edges", "FC and SC edges", "global summaries")


def edges(matrix: np.ndarray) -> np.ndarray:
    """Upper triangle (R * (R - 1) / 2,) of a symmetric (R, R) connectome, row by row."""
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


def baseline_features(
    fc: list[np.ndarray | None], sc: list[np.ndarray | None], participants: list[str]
) -> dict[str, np.ndarray | str]:
    """Feature matrices of :data:`BASELINES`, or the reason one cannot be built.

    Parameters
    ----------
    fc, sc : list of ndarray, shape (R, R), or None
        Per row of the feature table: the functional connectivity (mean over runs) and the signed structural
        connectome, None where the participant has none.
    participants : list of str
        Row names for messages (``sub-01`` or ``sub-01 ses-a``).

    Returns
    -------
    dict
        Name -> (N, F) features, or a one-line reason it is skipped. Edges missing in any row (a parcel
        below the coverage threshold) are left out of the edge sets, and so are SC edges without streamlines
        in any row: an edge seen in a few participants only is a near-constant column that standardises to
        huge values (out-of-fold errors of 1e12 on the demo), while the consensus edges carry the signal.
    """
    sets: dict[str, np.ndarray | str] = {}
    full: dict[str, np.ndarray] = {}
    for name, matrices in (("FC edges", fc), ("SC edges", sc)):
        missing = [who for who, m in zip(participants, matrices, strict=True) if m is None]
        if missing:
            sets[name] = f"no {name.split()[0]} for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
            continue
        stacked = np.stack([edges(m) for m in matrices if m is not None])
        full[name] = stacked
        keep = np.isfinite(stacked).all(axis=0)
        if name == "SC edges":  # an edge tracked in only some participants standardises to outliers
            keep &= (stacked != 0).all(axis=0)
        sets[name] = stacked[:, keep]
    fc_edges, sc_edges = sets["FC edges"], sets["SC edges"]
    if isinstance(fc_edges, np.ndarray) and isinstance(sc_edges, np.ndarray):
        sets["FC and SC edges"] = np.hstack([fc_edges, sc_edges])
    else:
        sets["FC and SC edges"] = next(s for s in (fc_edges, sc_edges) if isinstance(s, str))
    summaries = []
    if "FC edges" in full:
        summaries.append(np.nanmean(full["FC edges"], axis=1))
    if "SC edges" in full:
        sc_all = np.nan_to_num(full["SC edges"])
        summaries += [np.abs(sc_all).mean(axis=1), (sc_all != 0).mean(axis=1)]
    sets["global summaries"] = np.stack(summaries, axis=1) if summaries else "no connectomes"
    return {name: sets[name] for name in BASELINES}
