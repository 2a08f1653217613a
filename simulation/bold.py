"""Paint parcel signals into a preprocessed-looking BOLD series on the 4 mm MNI grid.

Voxel ``v`` of parcel ``r`` at frame ``t``::

    y_v(t) = b_v [1 + a_v z_r(t) + global + physiology + drift + noise] + motion_v(t)   (x non-steady-state)

``b_v`` is an EPI-like baseline (CSF bright, white matter dark, smooth bias field), ``z_r`` the parcel signal
standardised over the steady-state frames, ``a_v`` a grey-matter-weighted amplitude. ``motion_v(t)`` is the
intensity change of moving the baseline image by the realignment parameters (first order:
``-grad b . (trans + rot x r)``), so it is linear in the six motion columns and regressing them out removes
it; sudden movements also dip the whole brain for one frame, which only scrubbing removes. Physiological noise
loads on CSF and white matter (removed by the ``csf``/``white_matter`` or CompCor columns), the first volumes
are brighter (non-steady state).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from pipelines.docstrings import fill_doc
from simulation.anatomy import Anatomy

#: MNI mm point rotations turn about (roughly the centre of the head).
ROTATION_CENTRE_MM = np.array([0.0, -18.0, 18.0])


def _standard_series(length: int, rng: np.random.Generator, *, smooth_frames: float) -> np.ndarray:
    series = gaussian_filter1d(rng.standard_normal(length), smooth_frames)
    return (series - series.mean()) / series.std()


@fill_doc
def paint_bold(
    region_signals: np.ndarray,
    anatomy: Anatomy,
    indices: np.ndarray,
    *,
    t_r: float,
    motion: np.ndarray,
    jerks: np.ndarray,
    n_dummy: int,
    rng: np.random.Generator,
    signal_percent: float = 1.5,
    noise_percent: float = 2.0,
) -> np.ndarray:
    """Make the BOLD volumes of one run.

    Parameters
    ----------
    region_signals : ndarray, shape (R, n_frames)
        Parcel signals (e.g. from :func:`simulation.simulate.simulate_bold`), all frames.
    anatomy : Anatomy
        Brain mask, tissue fractions and labels on the BOLD grid.
    indices : ndarray of int, shape (R,)
        Atlas index of each row of ``region_signals``.
    %(t_r)s
    motion : ndarray, shape (n_frames, 6)
        Realignment parameters (mm, radians), see :func:`simulation.confounds.simulate_motion`.
    jerks : ndarray of int
        Frames with a sudden movement (a global intensity dip).
    n_dummy : int
        Non-steady-state volumes at the start (brighter).
    rng : numpy.random.Generator
        Source of the noise.
    signal_percent, noise_percent : float
        Neural signal amplitude in grey matter and thermal noise, in percent of the baseline.

    Returns
    -------
    ndarray, shape (X, Y, Z, n_frames), float32
        Zero outside the brain mask.
    """
    n_frames = region_signals.shape[1]
    brain = anatomy.brain
    baseline = _baseline(anatomy, rng)
    b = baseline[brain][:, None]  # (V, 1)
    wm, gm, csf = (part[brain][:, None] for part in (anatomy.wm, anatomy.gm, anatomy.csf))

    steady = region_signals[:, n_dummy:]
    z = (region_signals - steady.mean(axis=1, keepdims=True)) / steady.std(axis=1, keepdims=True)
    position = np.full(int(max(indices.max(), anatomy.labels.max())) + 1, -1)
    position[np.asarray(indices)] = np.arange(len(indices))
    labelled = position[anatomy.labels[brain]]  # (V,), -1 where unlabelled
    neural = np.zeros((len(labelled), n_frames), dtype=np.float32)
    has_label = labelled >= 0
    amplitude = signal_percent / 100.0 * (0.4 + 0.6 * gm[has_label])
    neural[has_label] = amplitude * z[labelled[has_label]]

    slow = 10.0 / t_r
    global_signal = 0.004 * _standard_series(n_frames, rng, smooth_frames=slow)
    physio_csf = _standard_series(n_frames, rng, smooth_frames=1.0)
    physio_wm = _standard_series(n_frames, rng, smooth_frames=3.0)
    physiology = (0.03 * csf + 0.004 * gm) * physio_csf + 0.01 * wm * physio_wm
    ramp = np.linspace(-0.5, 0.5, n_frames)
    drift = 0.01 * rng.uniform(0.5, 1.5, size=(len(b), 1)) * ramp
    noise = noise_percent / 100.0 * rng.standard_normal((len(b), n_frames))
    data = b * (1.0 + neural + global_signal + physiology + drift + noise)
    data += _motion_effect(baseline, anatomy, motion)
    for frame in jerks:
        data[:, frame] *= 1.0 - 0.03 * rng.uniform(0.5, 1.0, size=len(b))
    for frame in range(n_dummy):
        data[:, frame] *= 1.0 + 0.5 * np.exp(-frame / 1.2)
    volume = np.zeros((*anatomy.grid.shape, n_frames), dtype=np.float32)
    volume[brain] = data
    return volume


def _baseline(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """EPI-like mean image (X, Y, Z): CSF bright, white matter dark, times a smooth bias field."""
    tissue = 850.0 * anatomy.wm + 1000.0 * anatomy.gm + 1400.0 * anatomy.csf
    field = gaussian_filter(rng.standard_normal(anatomy.grid.shape), sigma=8.0)
    field = 1.0 + 0.1 * field / np.abs(field).max()
    return (tissue * field * anatomy.brain).astype(np.float32)


def _motion_effect(baseline: np.ndarray, anatomy: Anatomy, motion: np.ndarray) -> np.ndarray:
    """First-order intensity change (V, n_frames) of the baseline moved by the realignment parameters."""
    grid = anatomy.grid
    axis_sign = np.sign(np.diag(grid.affine)[:3])
    gradient = np.stack(np.gradient(baseline), axis=-1)[anatomy.brain] * axis_sign / grid.step  # (V, 3)
    voxels = np.argwhere(anatomy.brain)
    position = voxels @ grid.affine[:3, :3].T + grid.affine[:3, 3] - ROTATION_CENTRE_MM
    rotation_gain = np.cross(position, gradient)  # d(intensity)/d(rotation), (V, 3)
    gains = np.concatenate([gradient, rotation_gain], axis=1)  # (V, 6)
    return -(gains @ motion.T).astype(np.float32)
