"""Synthetic diffusion MRI of a demo participant (single shell, b = 1000 s/mm^2).

Each brain voxel mixes three compartments weighted by its tissue fractions: white matter (a tensor along the
planted tract through the voxel, two tensors where two tracts cross, an almost isotropic tensor elsewhere),
grey matter (isotropic, 0.8e-3 mm^2/s) and CSF (free water, 3e-3 mm^2/s). Compartment signals come from
:func:`dipy.sims.voxel.multi_tensor`, computed once per distinct fibre configuration. b0 contrast is T2-like
(CSF bright, white matter darkest); Rician noise at the given SNR of white-matter b0. White-matter radial
diffusivity rises with age, so fractional anisotropy falls with age.

The data array is laid out on the 3 mm MNI grid; the participant's head pose moves it in scanner space
(affine = pose @ MNI affine), so registration to the atlas has real work to do. b-vectors are unit vectors
in the image's voxel axes (FSL convention for an affine with negative determinant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.core.sphere import HemiSphere, disperse_charges
from dipy.data import get_sphere
from dipy.sims.voxel import multi_tensor

from simulation.anatomy import Anatomy
from simulation.tracts import Tract, fibre_field

B_VALUE = 1000.0
#: b0 intensity of each pure tissue (T2-like contrast) and its isotropic diffusivity in mm^2/s.
S0_TISSUE = {"wm": 800.0, "gm": 1100.0, "csf": 2200.0}
GM_DIFFUSIVITY = 0.8e-3
CSF_DIFFUSIVITY = 3.0e-3
AXIAL_DIFFUSIVITY = 1.7e-3
#: Eigenvalues of white matter outside the planted tracts (fractional anisotropy about 0.2).
BACKGROUND_WM_EVALS = (1.0e-3, 0.75e-3, 0.6e-3)
#: Fraction of white matter forced inside a planted tract.
TRACT_WM_FRACTION = 0.8


def radial_diffusivity_for_age(age: float) -> float:
    """White-matter radial diffusivity in mm^2/s: 0.35e-3 at 20 years, +0.004e-3 per year.

    Parameters
    ----------
    age : float
        Age in years.

    Returns
    -------
    float
        Radial diffusivity, mm^2/s (fractional anisotropy of a tract voxel about 0.77 at 20, 0.60 at 80).
    """
    return 0.35e-3 + 0.004e-3 * max(age - 20.0, 0.0)


def acquisition_scheme(*, n_directions: int = 32, n_b0: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A single-shell scheme: ``n_b0`` interleaved b0 volumes and ``n_directions`` repulsion directions.

    Parameters
    ----------
    n_directions : int
        Diffusion-weighted volumes at b = 1000 s/mm^2.
    n_b0 : int
        b = 0 volumes, the first at volume 0 and the rest spread evenly.

    Returns
    -------
    bvals : ndarray, shape (N,)
        b-values in s/mm^2, N = n_b0 + n_directions.
    bvecs : ndarray, shape (N, 3)
        Unit vectors (zeros for b0), electrostatically repelled on a hemisphere; fixed (not seeded by the
        study) so every participant shares the protocol.
    """
    rng = np.random.default_rng(1000)
    theta = np.arccos(rng.uniform(0.0, 1.0, n_directions))
    phi = rng.uniform(0.0, 2 * np.pi, n_directions)
    hemisphere, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 400)
    directions = hemisphere.vertices / np.linalg.norm(hemisphere.vertices, axis=1, keepdims=True)
    n_total = n_directions + n_b0
    b0_at = np.round(np.linspace(0, n_total, n_b0, endpoint=False)).astype(int)
    bvals = np.full(n_total, B_VALUE)
    bvals[b0_at] = 0.0
    bvecs = np.zeros((n_total, 3))
    bvecs[bvals > 0] = directions
    return bvals, bvecs


@dataclass(frozen=True)
class DwiSimulation:
    """A simulated DWI series.

    Attributes
    ----------
    data : ndarray, shape (X, Y, Z, N), int16
        Signal on the 3 mm MNI grid (noise inside a dilated head box, 0 beyond).
    bvals : ndarray, shape (N,)
        s/mm^2.
    bvecs : ndarray, shape (N, 3)
        Unit vectors in voxel axes.
    fa_tract_voxel : float
        Fractional anisotropy of the pure white-matter tensor used inside tracts.
    n_tract_voxels : int
        Brain voxels crossed by at least one tract (two tracts: ``n_crossing_voxels``).
    n_crossing_voxels : int
        Voxels with two fibre populations.
    """

    data: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    fa_tract_voxel: float
    n_tract_voxels: int
    n_crossing_voxels: int


def _fa(evals: np.ndarray) -> float:
    mean = evals.mean()
    return float(np.sqrt(1.5 * ((evals - mean) ** 2).sum() / (evals**2).sum()))


def simulate_dwi(
    anatomy: Anatomy,
    tracts: list[Tract],
    *,
    age: float,
    rng: np.random.Generator,
    snr: float = 25.0,
    n_directions: int = 32,
    n_b0: int = 6,
    tract_radius_mm: float = 4.0,
) -> DwiSimulation:
    """Simulate one participant's DWI on the anatomy's grid.

    Parameters
    ----------
    anatomy : Anatomy
        Tissue fractions and brain mask on the DWI grid (3 mm in the demo).
    tracts : list of Tract
        Planted tracts (MNI mm).
    age : float
        Age in years; sets the radial diffusivity (:func:`radial_diffusivity_for_age`).
    rng : numpy.random.Generator
        Source of the background orientations and the noise.
    snr : float
        b0 signal of pure white matter over the noise standard deviation.
    n_directions, n_b0 : int
        Acquisition scheme (:func:`acquisition_scheme`).
    tract_radius_mm : float
        Radius of each tract, in mm.

    Returns
    -------
    DwiSimulation
        Data, scheme and summary numbers.
    """
    bvals, bvecs = acquisition_scheme(n_directions=n_directions, n_b0=n_b0)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=50)
    grid, brain = anatomy.grid, anatomy.brain
    voxels = np.argwhere(brain)
    world = voxels @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    directions, tract_ids = fibre_field(tracts, world, radius_mm=tract_radius_mm)
    # MNI mm axes -> voxel axes of the grid (x is flipped): a unit vector stays a unit vector.
    to_voxel = np.sign(np.diag(grid.affine)[:3])
    directions = directions * to_voxel
    sphere = get_sphere(name="repulsion724")
    half = sphere.vertices[sphere.vertices[:, 2] >= 0]
    has_fibre = tract_ids >= 0
    nearest = np.zeros(has_fibre.shape, dtype=int)
    nearest[has_fibre] = np.abs(directions[has_fibre] @ half.T).argmax(axis=1)
    background = rng.integers(0, len(half), len(voxels))
    first = np.where(has_fibre[:, 0], nearest[:, 0], len(half) + background)  # >= len(half): background
    second = np.where(has_fibre[:, 1], nearest[:, 1], -1)

    radial = radial_diffusivity_for_age(age)
    fibre_evals = np.array([AXIAL_DIFFUSIVITY, radial, radial])
    keys = np.stack([first, second], axis=1)
    unique_keys, inverse = np.unique(keys, axis=0, return_inverse=True)
    wm_signal = np.empty((len(unique_keys), len(bvals)))
    for row, (a, b) in enumerate(unique_keys):
        if a >= len(half):
            wm_signal[row], _ = multi_tensor(
                gtab,
                np.array([BACKGROUND_WM_EVALS]),
                S0=1.0,
                angles=half[a - len(half)][None],
                fractions=[100.0],
                snr=None,
            )
        elif b < 0:
            wm_signal[row], _ = multi_tensor(
                gtab, fibre_evals[None], S0=1.0, angles=half[a][None], fractions=[100.0], snr=None
            )
        else:
            wm_signal[row], _ = multi_tensor(
                gtab,
                np.stack([fibre_evals, fibre_evals]),
                S0=1.0,
                angles=half[[a, b]],
                fractions=[50.0, 50.0],
                snr=None,
            )
    gm_signal = np.exp(-bvals * GM_DIFFUSIVITY)
    csf_signal = np.exp(-bvals * CSF_DIFFUSIVITY)

    wm, gm, csf = (anatomy.wm[brain], anatomy.gm[brain], anatomy.csf[brain])
    in_tract = has_fibre[:, 0]
    boost = np.where(in_tract, np.maximum(wm, TRACT_WM_FRACTION), wm)
    rest = np.where(in_tract, (1 - boost) / np.maximum(gm + csf, 1e-6), 1.0)
    wm, gm, csf = boost, gm * rest, csf * rest
    signal = (
        S0_TISSUE["wm"] * wm[:, None] * wm_signal[inverse.reshape(-1)]
        + S0_TISSUE["gm"] * gm[:, None] * gm_signal[None]
        + S0_TISSUE["csf"] * csf[:, None] * csf_signal[None]
    )
    volume = np.zeros((*grid.shape, len(bvals)), dtype=np.float32)
    volume[brain] = signal
    head = _head_box(brain, margin=3)
    sigma = S0_TISSUE["wm"] / snr
    noisy = np.sqrt(
        (volume[head] + sigma * rng.standard_normal((head.sum(), len(bvals)))) ** 2
        + (sigma * rng.standard_normal((head.sum(), len(bvals)))) ** 2
    )
    volume[head] = noisy
    data = np.clip(np.rint(volume), 0, np.iinfo(np.int16).max).astype(np.int16)
    return DwiSimulation(
        data=data,
        bvals=bvals,
        bvecs=bvecs,
        fa_tract_voxel=_fa(fibre_evals),
        n_tract_voxels=int(in_tract.sum()),
        n_crossing_voxels=int(has_fibre[:, 1].sum()),
    )


def _head_box(brain: np.ndarray, *, margin: int) -> np.ndarray:
    """The brain mask dilated by ``margin`` voxels (a crude head)."""
    from scipy.ndimage import binary_dilation

    return binary_dilation(brain, iterations=margin)
