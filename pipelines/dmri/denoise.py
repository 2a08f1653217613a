"""DWI denoising by Marchenko-Pastur PCA (Veraart et al. 2016), on by default for raw BIDS DWI.

QSIPrep outputs are usually denoised already (denoising twice blurs the data), so they are left alone unless
``--dwi-denoise`` says otherwise.

With ``patch_stride=1`` the computation is that of DIPY's ``dipy.denoise.localpca.mppca`` (5 x 5 x 5 patches,
eigen-decomposition of each patch's covariance, the Marchenko-Pastur noise classifier, patches averaged with
weights 1 / (1 + N - p) for p noise components), with the patches of thousands of voxels taken and decomposed at
once: DIPY loops over voxels in Python and needs about 5 ms per brain voxel (20 minutes for a 2 mm brain); this
takes about 0.2 ms on two threads. The two agree to float32 rounding (tests/pipelines/dmri/test_dmri_denoise.py).

The default centres patches on every second voxel along each axis: an eighth of the decompositions, each voxel
still averaged over 8 to 27 overlapping patches instead of 125. On the full-size demo DWI this is 4.4x faster
and leaves 4% more error to the noiseless data, still less than MRtrix3's ``dwidenoise`` leaves (see
docs/architecture.md, "Performance budget").
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from scipy import ndimage

#: Patch radius (voxels) of the local PCA; 2 gives 5 x 5 x 5 patches.
PATCH_RADIUS = 2
#: Spacing (voxels) of the patch centres along each axis; 1 centres a patch on every brain voxel, as DIPY does.
PATCH_STRIDE = 2
#: Patch centres decomposed at once (their patches take CHUNK x 125 x N x 4 bytes, 147 MB for N = 72).
CHUNK = 4096


def denoise_dwi(
    dwi: np.ndarray, mask: np.ndarray, *, patch_stride: int = PATCH_STRIDE, n_threads: int = 1
) -> np.ndarray:
    """Denoise a DWI with MP-PCA inside the brain mask.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion data.
    mask : ndarray, shape (X, Y, Z), bool
        Brain mask; voxels outside, and those no patch reaches (within 2 voxels of the grid's edge), are
        returned unchanged.
    patch_stride : int
        Spacing of the patch centres: 1 centres one on every brain voxel; s > 1 on every s-th voxel along each
        axis of the brain mask dilated by s - 1 voxels, so that every brain voxel is still in a patch; at most
        ``PATCH_RADIUS + 1``.
    n_threads : int
        CPU threads; the result does not depend on it.

    Returns
    -------
    ndarray, shape (X, Y, Z, N), float32
    """
    if not 1 <= patch_stride <= PATCH_RADIUS + 1:
        raise ValueError(f"patch_stride must be 1-{PATCH_RADIUS + 1}, got {patch_stride}")
    mask = np.asarray(mask, bool)
    source = np.asarray(dwi, dtype=np.float32)
    if not source.flags.writeable:  # a read-only memory map: torch wants writable arrays, though it only reads
        source = source.copy()
    with _one_thread_each(), torch.inference_mode():  # every torch call inside: see _one_thread_each
        # a C-ordered copy (NIfTI data load in Fortran order): one voxel's N values side by side, and the output
        data = torch.empty(source.shape, dtype=torch.float32).copy_(torch.from_numpy(source))
        centres = _patch_centres(mask, PATCH_RADIUS, patch_stride)
        weight, weighted = _patch_estimates(data, centres, PATCH_RADIUS, n_threads)
        covered = torch.from_numpy(np.flatnonzero((weight > 0).numpy().reshape(mask.shape) & mask))
        estimate = weighted[covered].div_(weight[covered, None]).clamp_min_(0)
        data.view(-1, data.shape[-1])[covered] = estimate
        return data.numpy()


def _patch_centres(mask: np.ndarray, radius: int, stride: int) -> np.ndarray:
    """Voxels (X, Y, Z) bool on which a patch is centred: on the stride's grid, whole patches only."""
    reach = mask
    if stride > 1:
        reach = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool), iterations=stride - 1)
    # every stride-th position from the first whole patch, and the last whole patch, along each axis
    axes = [np.union1d(np.arange(radius, size - radius, stride), [size - radius - 1]) for size in mask.shape]
    on_grid = np.ix_(*axes)
    centres = np.zeros(mask.shape, bool)
    centres[on_grid] = reach[on_grid]
    return centres


def _patch_estimates(
    data: torch.Tensor, centres: np.ndarray, radius: int, n_threads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of patch weights per voxel, (X*Y*Z,), and of weighted patch estimates, (X*Y*Z, N).

    Chunks of patch centres are decomposed by ``n_threads`` single-threaded workers (batched small
    eigen-decompositions do not share one chunk between threads well) and summed here, in order.
    """
    _, ny, nz, n_dir = data.shape
    flat = data.reshape(-1, n_dir)
    centre_index = torch.from_numpy(np.flatnonzero(centres))
    steps = torch.arange(-radius, radius + 1)
    offsets = (steps[:, None, None] * ny * nz + steps[None, :, None] * nz + steps[None, None, :]).reshape(-1)
    weight = torch.zeros(len(flat))
    weighted = torch.zeros(len(flat), n_dir)
    chunks = [centre_index[start : start + CHUNK, None] + offsets for start in range(0, len(centre_index), CHUNK)]
    with ThreadPoolExecutor(max(1, n_threads)) as pool:
        pending: deque = deque()
        for index in chunks:
            pending.append((index, pool.submit(_chunk_estimates, flat, index)))
            if len(pending) > 2 * n_threads:  # bounded: a chunk's patches are ~150 MB
                _add(weight, weighted, *pending.popleft())
        while pending:
            _add(weight, weighted, *pending.popleft())
    return weight, weighted


def _chunk_estimates(flat: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (V,) and weighted denoised patches (V, S, N) of the patches ``index`` (V, S) of ``flat``."""
    samples, n_dir = index.shape[1], flat.shape[1]
    patches = flat[index]  # (V, S, N)
    mean = patches.mean(1, keepdim=True)
    patches -= mean
    covariance = torch.bmm(patches.transpose(1, 2), patches).div_(samples)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    tau_squared = (1.0 + np.sqrt(n_dir / samples)) ** 2  # DIPY's default threshold factor, squared
    n_noise = (eigenvalues < tau_squared * _noise_variance(eigenvalues, samples)[:, None]).sum(1)
    patch_weight = 1.0 / (1.0 + n_dir - n_noise.float())
    # Project onto the signal components only: the last n_dir - n_noise eigenvectors (typically about 6 of 72
    # in brain patches); the chunk's widest signal subspace sets the width of the products.
    first = int(n_noise.min())
    signal = eigenvectors[:, :, first:] * (torch.arange(first, n_dir) >= n_noise[:, None])[:, None, :]
    weighted_signal = torch.bmm(patches, signal).mul_(patch_weight[:, None, None])
    return patch_weight, torch.baddbmm(mean * patch_weight[:, None, None], weighted_signal, signal.transpose(1, 2))


def _add(weight: torch.Tensor, weighted: torch.Tensor, index: torch.Tensor, done: Future) -> None:
    patch_weight, estimate = done.result()
    weight.index_add_(0, index.reshape(-1), patch_weight.repeat_interleave(index.shape[1]))
    weighted.index_add_(0, index.reshape(-1), estimate.reshape(-1, weighted.shape[1]))


def _noise_variance(eigenvalues: torch.Tensor, samples: int) -> torch.Tensor:
    """Marchenko-Pastur noise variance of each patch from its ascending eigenvalues, (V, N) -> (V,).

    The noise components are the largest c + 1 whose spread fits the MP law:
    lambda_c - lambda_0 <= 4 sqrt((c + 1) / samples) * mean(lambda_0..c); the variance is that mean. Only
    ``samples - 1`` eigenvalues can be non-zero after the mean is removed.
    """
    values = eigenvalues[:, -(samples - 1) :]
    count = torch.arange(1, values.shape[1] + 1, dtype=values.dtype)
    running_mean = values.cumsum(1) / count
    fits = values - values[:, :1] <= 4.0 * torch.sqrt(count / samples) * running_mean
    last = values.shape[1] - 1 - fits.flip(1).to(torch.uint8).argmax(1)  # largest c that fits
    return running_mean.gather(1, last[:, None])[:, 0]


@contextmanager
def _one_thread_each():
    """Torch's own thread pool off while inside: the chunks are shared between threads instead.

    Small batched eigen-decompositions split poorly between OpenMP threads (0.30 ms per patch with two, against
    0.18 ms with two single-threaded workers), and torch calls made with one thread never open an OpenMP
    pool, which a process forked later from this thread would inherit broken.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
