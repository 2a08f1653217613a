"""Seeded diffusion phantoms with straight fibre bundles joining known parcels (tests, bench, demo).

Each bundle is a cylinder between two points; voxels inside it hold a prolate tensor along the bundle
(crossing voxels split their signal equally between bundles), the rest of the brain is isotropic, and
outside the brain the signal is zero. Rician noise at a given SNR on S0. Parcels are balls around the bundle
ends (plus unconnected decoys), so the expected connectome is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tensor eigenvalues (mm^2/s) of a bundle voxel: along, across, across.
FIBRE_EVALS = (1.7e-3, 0.3e-3, 0.3e-3)
#: Diffusivity (mm^2/s) of non-bundle brain.
ISOTROPIC_D = 0.9e-3
#: Signal of a b0 volume.
S0 = 1000.0


@dataclass(frozen=True)
class Bundle:
    """A straight cylinder of fibres, in voxel coordinates."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float = 1.5


@dataclass
class Phantom:
    """A DWI with its gradient table, brain mask and atlas on the same grid.

    Attributes
    ----------
    dwi : ndarray, shape (X, Y, Z, N), float32
    bvals : ndarray, shape (N,), s/mm^2
    bvecs : ndarray, shape (N, 3)
        Unit vectors; zero for b0 volumes.
    affine : ndarray, shape (4, 4)
        Voxel-to-world, mm (isotropic voxels, origin at the grid centre).
    mask : ndarray, shape (X, Y, Z), bool
    atlas : ndarray, shape (X, Y, Z), int16
        Parcel labels (0 background).
    labels : list of int
        Atlas indices in order, length R.
    names : list of str
        Parcel names, length R.
    planted_pairs : list of tuple of int
        Label pairs joined by a bundle.
    """

    dwi: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    affine: np.ndarray
    mask: np.ndarray
    atlas: np.ndarray
    labels: list[int]
    names: list[str]
    planted_pairs: list[tuple[int, int]]


def hemisphere_directions(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors on the upper hemisphere (Fibonacci spiral), shape (n, 3)."""
    index = np.arange(n) + 0.5
    z = 1.0 - index / n
    radius = np.sqrt(1.0 - z**2)
    angle = np.pi * (3.0 - np.sqrt(5.0)) * index
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle), z])


def simulate_dwi(
    shape: tuple[int, int, int],
    bundles: list[Bundle],
    mask: np.ndarray,
    *,
    voxel_mm: float = 2.0,
    n_directions: int = 30,
    n_b0: int = 2,
    bval: float = 2000.0,
    snr: float = 30.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Signal of ``bundles`` inside ``mask`` on a grid of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Grid (X, Y, Z).
    bundles : list of Bundle
        Cylinders in voxel coordinates.
    mask : ndarray, shape (X, Y, Z), bool
        Brain; zero signal outside.
    voxel_mm : float, mm
    n_directions : int
        Diffusion directions (one shell).
    n_b0 : int
        b0 volumes, placed first.
    bval : float, s/mm^2
    snr : float
        S0 / noise standard deviation (Rician noise); ``inf`` for none.
    seed : int
        Noise seed.

    Returns
    -------
    dwi : ndarray, shape (X, Y, Z, N), float32
    bvals : ndarray, shape (N,)
    bvecs : ndarray, shape (N, 3)
    affine : ndarray, shape (4, 4)
    """
    bvecs = np.vstack([np.zeros((n_b0, 3)), hemisphere_directions(n_directions)])
    bvals = np.r_[np.zeros(n_b0), np.full(n_directions, bval)]
    points = np.argwhere(mask).astype(np.float64)  # only brain voxels carry signal
    fractions = np.zeros((len(points), len(bundles)), dtype=np.float32)
    for k, bundle in enumerate(bundles):
        fractions[:, k] = _inside(points, bundle)
    n_fibres = fractions.sum(axis=1)
    parallel, across = FIBRE_EVALS[0], FIBRE_EVALS[1]
    inside = np.where(n_fibres[:, None] > 0, 0.0, np.exp(-bvals * ISOTROPIC_D)[None, :]).astype(np.float32)
    for k, bundle in enumerate(bundles):
        members = np.flatnonzero(fractions[:, k])
        if members.size == 0:
            continue
        direction = np.subtract(bundle.end, bundle.start)
        direction = direction / np.linalg.norm(direction)
        cos2 = (bvecs @ direction) ** 2
        attenuation = np.exp(-bvals * (across + (parallel - across) * cos2)).astype(np.float32)
        inside[members] += (1.0 / n_fibres[members])[:, None] * attenuation[None, :]
    inside *= S0
    if np.isfinite(snr):
        rng = np.random.default_rng(seed)
        sigma = S0 / snr
        real = inside + rng.normal(0.0, sigma, inside.shape).astype(np.float32)
        imag = rng.normal(0.0, sigma, inside.shape).astype(np.float32)
        inside = np.sqrt(real**2 + imag**2)
    signal = np.zeros((*shape, len(bvals)), dtype=np.float32)
    signal[mask] = inside
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    return signal, bvals, bvecs, affine


def crossing_phantom(
    *, shape: tuple[int, int, int] = (23, 19, 15), n_directions: int = 30, snr: float = 30.0, seed: int = 0
) -> Phantom:
    """Three bundles (two crossing at the centre) joining six parcels, plus one unconnected parcel.

    Bundle A runs along x and bundle B along y, crossing at 90 degrees in the grid centre; bundle C runs
    along z in the (x/4, y/4) column. Labels are deliberately not 1..R: ``[3, 5, 8, 10, 11, 20, 21]``,
    with planted pairs (3, 5) for A, (8, 10) for B and (11, 20) for C; 21 is a decoy.

    Parameters
    ----------
    shape : tuple of int
        Grid (X, Y, Z), 2 mm voxels; each side at least 11.
    n_directions : int
        Diffusion directions, b = 2000 s/mm^2, plus 2 b0.
    snr : float
        S0 / noise standard deviation.
    seed : int
        Noise seed.

    Returns
    -------
    Phantom
        R = 7 parcels.
    """
    nx, ny, nz = shape
    cx, cy, cz = nx // 2, ny // 2, nz // 2
    qx, qy = nx // 4, ny // 4
    ends = {
        3: (1, cy, cz),
        5: (nx - 2, cy, cz),
        8: (cx, 1, cz),
        10: (cx, ny - 2, cz),
        11: (qx, qy, 1),
        20: (qx, qy, nz - 2),
    }
    bundles = [Bundle(ends[3], ends[5]), Bundle(ends[8], ends[10]), Bundle(ends[11], ends[20])]
    mask = np.zeros(shape, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    dwi, bvals, bvecs, affine = simulate_dwi(shape, bundles, mask, n_directions=n_directions, snr=snr, seed=seed)
    centres = {**ends, 21: (nx - 3, ny - 3, nz - 3)}
    atlas = _ball_parcels(shape, centres, radius=2.5) * mask
    labels = sorted(centres)
    names = [f"parcel{label:02d}" for label in labels]
    return Phantom(
        dwi=dwi,
        bvals=bvals,
        bvecs=bvecs,
        affine=affine,
        mask=mask,
        atlas=atlas.astype(np.int16),
        labels=labels,
        names=names,
        planted_pairs=[(3, 5), (8, 10), (11, 20)],
    )


def brain_phantom(
    *,
    shape: tuple[int, int, int] = (78, 94, 72),
    n_bundles: int = 60,
    blocks: tuple[int, int, int] = (7, 8, 6),
    n_directions: int = 64,
    snr: float = 25.0,
    seed: int = 0,
) -> Phantom:
    """A brain-sized phantom: an ellipsoid with random straight bundles and a block parcellation.

    Bundles join random points near the ellipsoid surface through its interior (so many cross);
    parcels are the ellipsoid cut into ``blocks`` boxes. ``planted_pairs`` lists the parcels at each
    bundle's two ends (pairs may repeat).

    Parameters
    ----------
    shape : tuple of int
        Grid (X, Y, Z), 2 mm voxels.
    n_bundles : int
        Number of bundles.
    blocks : tuple of int
        Parcel boxes along x, y, z (empty boxes are dropped).
    n_directions : int
        Diffusion directions, b = 2000 s/mm^2, plus 2 b0.
    snr : float
        S0 / noise standard deviation.
    seed : int
        Seed of geometry and noise.

    Returns
    -------
    Phantom
    """
    rng = np.random.default_rng(seed)
    semi = (np.asarray(shape) - 4) / 2
    centre = (np.asarray(shape) - 1) / 2
    grid = np.indices(shape).reshape(3, -1).T
    mask = (((grid - centre) / semi) ** 2).sum(axis=1).reshape(shape) <= 1.0
    bundles = []
    for _ in range(n_bundles):
        ends = []
        for _ in range(2):
            direction = rng.normal(size=3)
            ends.append(tuple(centre + 0.85 * semi * direction / np.linalg.norm(direction)))
        bundles.append(Bundle(ends[0], ends[1], radius=float(rng.uniform(1.5, 3.0))))
    dwi, bvals, bvecs, affine = simulate_dwi(shape, bundles, mask, n_directions=n_directions, snr=snr, seed=seed)
    edges = [np.linspace(0, n, b + 1) for n, b in zip(shape, blocks, strict=True)]
    block_index = [
        np.clip(np.searchsorted(e, np.arange(n), side="right") - 1, 0, b - 1)
        for e, n, b in zip(edges, shape, blocks, strict=True)
    ]
    ix, iy, iz = np.meshgrid(*block_index, indexing="ij")
    atlas = (1 + ix + blocks[0] * (iy + blocks[1] * iz)) * mask
    labels = [int(v) for v in np.unique(atlas) if v > 0]
    planted = []
    for bundle in bundles:
        pair = [
            int(atlas[tuple(np.clip(np.round(p).astype(int), 0, np.asarray(shape) - 1))])
            for p in (bundle.start, bundle.end)
        ]
        planted.append((min(pair), max(pair)))
    return Phantom(
        dwi=dwi,
        bvals=bvals,
        bvecs=bvecs,
        affine=affine,
        mask=mask,
        atlas=atlas.astype(np.int16),
        labels=labels,
        names=[f"block{label:03d}" for label in labels],
        planted_pairs=planted,
    )


def _inside(points: np.ndarray, bundle: Bundle) -> np.ndarray:
    """1.0 for points within ``bundle.radius`` of the segment (between its ends), else 0.0; (P, 3) -> (P,)."""
    start, end = np.asarray(bundle.start, float), np.asarray(bundle.end, float)
    axis = end - start
    t = (points - start) @ axis / (axis @ axis)
    nearest = start + np.clip(t, 0.0, 1.0)[:, None] * axis
    distance = np.linalg.norm(points - nearest, axis=1)
    return ((distance <= bundle.radius) & (t >= 0.0) & (t <= 1.0)).astype(np.float64)


def _ball_parcels(shape: tuple[int, int, int], centres: dict[int, tuple], *, radius: float) -> np.ndarray:
    """Label image with a ball of ``radius`` voxels around each centre; shape (X, Y, Z)."""
    grid = np.indices(shape, dtype=np.float64)
    atlas = np.zeros(shape, dtype=np.int16)
    for label, centre in centres.items():
        distance2 = sum((grid[axis] - centre[axis]) ** 2 for axis in range(3))
        atlas[(distance2 <= radius**2) & (atlas == 0)] = label
    return atlas
