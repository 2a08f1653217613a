"""Planted white-matter tracts: which parcel pairs they join, their paths, and the fibre field they make.

A tract is a quadratic Bezier curve from one parcel centroid to another, bent towards the deep white matter
(association and thalamo-cortical tracts towards the brain's centre, commissural tracts over the corpus
callosum). The same pairs are strong connections in every participant's connectome, so tractography of the
demo DWI should recover them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

#: MNI mm point that association tracts bend towards, and the height of the commissural arch.
_DEEP_WHITE_MATTER = np.array([0.0, -15.0, 15.0])
_CALLOSUM_Z = 22.0
_BEND = 0.45


@dataclass(frozen=True)
class Tract:
    """One planted tract.

    Attributes
    ----------
    regions : tuple of int
        Zero-based region positions (rows of the connectome) of its two ends.
    kind : str
        ``association``, ``commissural`` or ``thalamocortical``.
    control_points : ndarray, shape (3, 3)
        Bezier control points in MNI mm (start, bend, end).
    """

    regions: tuple[int, int]
    kind: str
    control_points: np.ndarray

    def sample(self, spacing_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Points along the tract and unit tangents there.

        Parameters
        ----------
        spacing_mm : float
            Approximate distance between points, in mm.

        Returns
        -------
        points, tangents : ndarray, shape (M, 3)
            MNI mm positions and unit directions.
        """
        p0, p1, p2 = self.control_points
        n = max(8, int(np.ceil((np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1)) / spacing_mm)))
        s = np.linspace(0.0, 1.0, n)[:, None]
        points = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2
        tangents = 2 * (1 - s) * (p1 - p0) + 2 * s * (p2 - p1)
        return points, tangents / np.linalg.norm(tangents, axis=1, keepdims=True)

    @property
    def length_mm(self) -> float:
        """Arc length in mm."""
        points, _ = self.sample(0.5)
        return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def choose_tracts(
    centroids: np.ndarray,
    hemispheres: np.ndarray,
    is_thalamus: np.ndarray,
    rng: np.random.Generator,
    *,
    n_association: int = 24,
    n_commissural: int = 8,
    n_thalamocortical: int = 8,
    cortex_from: int = 50,
) -> list[Tract]:
    """Draw the planted tracts of a study.

    Parameters
    ----------
    centroids : ndarray, shape (R, 3)
        Region centroids in MNI mm.
    hemispheres : ndarray of str, shape (R,)
        ``"L"`` or ``"R"``.
    is_thalamus : ndarray of bool, shape (R,)
        Regions that may start a thalamo-cortical tract.
    rng : numpy.random.Generator
        Source of the choice.
    n_association, n_commissural, n_thalamocortical : int
        Number of tracts of each kind: within a hemisphere 45-110 mm apart, between near-mirror regions
        of the two hemispheres, and from a thalamus parcel to cortex 35-90 mm away.
    cortex_from : int
        Position of the first cortical region (regions before it are subcortical).

    Returns
    -------
    list of Tract
        Distinct pairs, no region used twice.
    """
    n_regions = len(centroids)
    distance = cdist(centroids, centroids)
    cortex = np.arange(n_regions) >= cortex_from
    same = hemispheres[:, None] == hemispheres[None, :]
    mirror = np.linalg.norm(centroids[:, None, :] * [-1, 1, 1] - centroids[None, :, :], axis=2)
    rules = {
        "association": same & cortex[:, None] & cortex[None, :] & (distance > 45) & (distance < 110),
        "commissural": ~same
        & cortex[:, None]
        & cortex[None, :]
        & (mirror < 15)
        & (np.abs(centroids[:, 0])[:, None] > 20),
        "thalamocortical": same & is_thalamus[:, None] & cortex[None, :] & (distance > 35) & (distance < 90),
    }
    wanted = {"association": n_association, "commissural": n_commissural, "thalamocortical": n_thalamocortical}
    used: set[int] = set()
    tracts: list[Tract] = []
    for kind, allowed in rules.items():
        candidates = np.argwhere(np.triu(allowed | allowed.T, 1))
        candidates = candidates[rng.permutation(len(candidates))]
        count = 0
        for a, b in candidates:
            if count == wanted[kind]:
                break
            if a in used or b in used:
                continue
            used.update((int(a), int(b)))
            tracts.append(
                Tract(
                    regions=(int(a), int(b)),
                    kind=kind,
                    control_points=_control_points(centroids[a], centroids[b], kind),
                )
            )
            count += 1
    return tracts


def _control_points(start: np.ndarray, end: np.ndarray, kind: str) -> np.ndarray:
    middle = (start + end) / 2
    if kind == "commissural":
        bend = np.array([0.0, middle[1], max(_CALLOSUM_Z, middle[2])])
    else:
        bend = middle + _BEND * (_DEEP_WHITE_MATTER - middle)
    return np.stack([start, bend, end])


def fibre_field(tracts: list[Tract], voxels_mm: np.ndarray, *, radius_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Up to two fibre directions per voxel from the tracts passing within ``radius_mm``.

    Parameters
    ----------
    tracts : list of Tract
        The planted tracts.
    voxels_mm : ndarray, shape (V, 3)
        Voxel centres in MNI mm.
    radius_mm : float
        Tract radius, in mm.

    Returns
    -------
    directions : ndarray, shape (V, 2, 3)
        Unit fibre directions in MNI mm axes; rows of zeros where there is no (second) fibre.
    tract_ids : ndarray of int, shape (V, 2)
        Tract of each direction, -1 where none. The second fibre is a different tract crossing at more
        than 30 degrees.
    """
    directions = np.zeros((len(voxels_mm), 2, 3))
    tract_ids = np.full((len(voxels_mm), 2), -1)
    if not tracts:
        return directions, tract_ids
    samples = [t.sample(1.0) for t in tracts]
    points = np.concatenate([p for p, _ in samples])
    tangents = np.concatenate([d for _, d in samples])
    owner = np.concatenate([np.full(len(p), i) for i, (p, _) in enumerate(samples)])
    dist, nearest = cKDTree(points).query(voxels_mm, k=12, distance_upper_bound=radius_mm)
    hit = np.isfinite(dist)
    for v in np.flatnonzero(hit[:, 0]):
        first = nearest[v, 0]
        directions[v, 0] = tangents[first]
        tract_ids[v, 0] = owner[first]
        for k in np.flatnonzero(hit[v, 1:]) + 1:
            other = nearest[v, k]
            if owner[other] != owner[first] and abs(tangents[other] @ tangents[first]) < np.cos(np.pi / 6):
                directions[v, 1] = tangents[other]
                tract_ids[v, 1] = owner[other]
                break
    return directions, tract_ids


def tracts_by_group(tracts: list[Tract], n_rewired: int) -> dict[str, list[Tract]]:
    """Each demo group's planted tracts: the rewired group joins other pairs of parcels with some tracts.

    Parameters
    ----------
    tracts : list of Tract
        From :func:`choose_tracts`, drawn with ``n_rewired`` association tracts more than either group keeps.
    n_rewired : int
        Association tracts that differ: the ``reference`` group has the first ``n_rewired`` of them, the
        ``rewired`` group the last ``n_rewired`` instead (different regions at both ends).

    Returns
    -------
    dict of str to list of Tract
        ``{"reference": [...], "rewired": [...]}``, the same number of tracts in each.
    """
    association = [k for k, t in enumerate(tracts) if t.kind == "association"]
    if len(association) < 2 * n_rewired:
        raise ValueError(f"{len(association)} association tracts cannot give {n_rewired} rewired ones")
    only_rewired, only_reference = set(association[-n_rewired:]), set(association[:n_rewired])
    return {
        "reference": [t for k, t in enumerate(tracts) if k not in only_rewired],
        "rewired": [t for k, t in enumerate(tracts) if k not in only_reference],
    }
