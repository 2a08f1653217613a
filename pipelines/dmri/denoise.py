"""DWI denoising by Marchenko-Pastur PCA (Veraart et al. 2016), on by default for raw BIDS DWI.

QSIPrep outputs are usually denoised already (denoising twice blurs the data), so they are left alone unless
``--dwi-denoise`` says otherwise.

The computation is that of DIPY's ``dipy.denoise.localpca.mppca`` (5 x 5 x 5 patches, eigen-decomposition of
each patch's covariance, the Marchenko-Pastur noise classifier, patches averaged with weights 1 / (1 + N - p)
for p noise components), with the patches of thousands of voxels taken and decomposed at once: DIPY loops over
voxels in Python and needs about 5 ms per brain voxel (20 minutes for a 2 mm brain); this takes about 0.2 ms
on two threads (see docs/architecture.md, "Performance budget"). The two agree to float32 rounding
(tests/pipelines/dmri/test_dmri_denoise.py).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

#: Patch radius (voxels) of the local PCA; 2 gives 5 x 5 x 5 patches.
PATCH_RADIUS = 2
#: Patch centres decomposed at once (their patches take CHUNK x 125 x N x 4 bytes, 147 MB for N = 72).
CHUNK = 4096


def denoise_dwi(dwi: np.ndarray, mask: np.ndarray, *, n_threads: int = 1) -> np.ndarray:
    """Denoise a DWI with MP-PCA inside the brain mask.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion data.
    mask : ndarray, shape (X, Y, Z), bool
        Brain mask; voxels outside, and those no patch reaches (within 2 voxels of the grid's edge), are
        returned unchanged.
    n_threads : int
        CPU threads; the result does not depend on it.

    Returns
    -------
    ndarray, shape (X, Y, Z, N), float32
    """
    data = np.ascontiguousarray(dwi, dtype=np.float32)
    mask = np.asarray(mask, bool)
    with _one_thread_each(), torch.inference_mode():  # every torch call inside: see _one_thread_each
        weight, weighted = _patch_estimates(torch.from_numpy(data), mask, PATCH_RADIUS, n_threads)
        covered = (weight > 0).numpy().reshape(mask.shape) & mask
        estimate = (weighted / weight.clamp_min(1e-30)[:, None]).numpy().reshape(data.shape)
        return np.where(covered[..., None], estimate.clip(min=0), data).astype(np.float32)


def _patch_estimates(
    data: torch.Tensor, mask: np.ndarray, radius: int, n_threads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of patch weights per voxel, (X*Y*Z,), and of weighted patch estimates, (X*Y*Z, N).

    Chunks of patch centres are decomposed by ``n_threads`` single-threaded workers (batched small
    eigen-decompositions do not share one chunk between threads well) and summed here, in order.
    """
    nx, ny, nz, n_dir = data.shape
    flat = data.reshape(-1, n_dir)
    inner = np.zeros(mask.shape, bool)
    inner[radius : nx - radius, radius : ny - radius, radius : nz - radius] = True
    centres = torch.from_numpy(np.flatnonzero(mask & inner))
    steps = torch.arange(-radius, radius + 1)
    offsets = (steps[:, None, None] * ny * nz + steps[None, :, None] * nz + steps[None, None, :]).reshape(-1)
    weight = torch.zeros(len(flat))
    weighted = torch.zeros(len(flat), n_dir)
    chunks = [centres[start : start + CHUNK, None] + offsets for start in range(0, len(centres), CHUNK)]
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
