"""Unsupervised network identification: do region embeddings cluster into the atlas's networks?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class NetworkIdentification:
    """K-means clusters of region embeddings and their agreement with the atlas networks."""

    clusters: np.ndarray  # (R,) cluster index per region
    networks: list[str]  # (R,) atlas network per region
    n_clusters: int
    adjusted_rand: float
    normalized_mutual_info: float


def identify_networks(
    embeddings: np.ndarray, networks: list[str], *, n_clusters: int | None = None, seed: int = 0
) -> NetworkIdentification:
    """Cluster regions by their embedding and compare with the atlas networks.

    Parameters
    ----------
    embeddings : ndarray, shape (R, D) or (S, R, D)
        Region embeddings; with S subjects they are averaged first.
    networks : list of str, length R
        Network of each region (the atlas table's ``network`` column).
    n_clusters : int, optional
        Number of clusters; default the number of distinct networks.
    seed : int
        Seed of k-means.

    Returns
    -------
    NetworkIdentification
        Clusters, adjusted Rand index and normalised mutual information against ``networks``.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(axis=0)
    if x.shape[0] != len(networks):
        raise ValueError(f"{x.shape[0]} region embeddings but {len(networks)} network labels")
    k = n_clusters or len(set(networks))
    clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(StandardScaler().fit_transform(x))
    return NetworkIdentification(
        clusters=clusters,
        networks=list(networks),
        n_clusters=k,
        adjusted_rand=float(adjusted_rand_score(networks, clusters)),
        normalized_mutual_info=float(normalized_mutual_info_score(networks, clusters)),
    )


def plot_contingency(result: NetworkIdentification, path: str | Path) -> Path:
    """Save a heatmap of regions per (network, cluster) with the scores in the title (SVG or PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(set(result.networks))
    table = np.zeros((len(names), result.n_clusters), int)
    for network, cluster in zip(result.networks, result.clusters, strict=True):
        table[names.index(network), cluster] += 1
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * result.n_clusters, 1.0 + 0.4 * len(names)))
    ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(result.n_clusters))
    ax.set_xlabel("cluster")
    ax.set_title(f"ARI {result.adjusted_rand:.2f}, NMI {result.normalized_mutual_info:.2f}")
    for (i, j), count in np.ndenumerate(table):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", color="w", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
