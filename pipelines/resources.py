"""Memory estimates of the heavy steps, in GB, from the size of their inputs.

The constants were measured on this project's demo data (2 CPU cores, ``ru_maxrss`` and Nipype's resource
monitor; the measurement is described in ``docs/architecture.md``, "Memory budget") and round up. They size
Nipype's ``mem_gb`` annotations and the model's batch, so that a run given a memory budget keeps under it.
"""

from __future__ import annotations

import math

MAIN_PROCESS_GB = 0.6  # the bsym-app process with torch, nipype, nilearn and dipy imported, inputs indexed
WORKER_GB = 0.4  # what one more Nipype MultiProc worker process holds before its node starts
REGISTRATION_GB = 0.8  # affine fit of the 1 mm template to the b0 (the template and its resampled copies)
DWI_FACTOR = 12.0  # working copies of the DWI (float32) while denoising, fitting FODs and tracking
BOLD_CHUNK_FACTOR = 4.0  # working copies of one chunk of BOLD volumes (float64) while parcellating
MODEL_FIXED_GB = 0.2  # weights, the connectome and the outputs being averaged
# one window of 450 regions x 200 frames, with attention maps; scales as R x (R + T)
MODEL_WINDOW_GB = 0.145
_REFERENCE_WINDOW = 450 * (450 + 200)


def dwi_step_gb(shape: tuple[int, ...], *, registration: bool = True) -> float:
    """Working memory of the heaviest dMRI step for a DWI of ``shape`` (X, Y, Z, volumes), with the template
    registration that places the atlas when ``registration``."""
    values = math.prod(shape)
    return (REGISTRATION_GB if registration else 0.0) + DWI_FACTOR * values * 4 / 1e9


def bold_step_gb(shape: tuple[int, ...], chunk: int) -> float:
    """Working memory of parcellating a BOLD series of ``shape`` (X, Y, Z, T), ``chunk`` volumes at a time."""
    voxels = math.prod(shape[:3])
    return 0.2 + BOLD_CHUNK_FACTOR * voxels * min(chunk, shape[3] if len(shape) > 3 else 1) * 8 / 1e9


def model_batch_gb(batch_size: int, n_regions: int, n_timepoints: int) -> float:
    """Working memory of one forward pass of ``batch_size`` windows (R regions x T frames), attention maps
    kept."""
    per_window = MODEL_WINDOW_GB * n_regions * (n_regions + n_timepoints) / _REFERENCE_WINDOW
    return MODEL_FIXED_GB + batch_size * per_window


def largest_batch(budget_gb: float, n_regions: int, n_timepoints: int, *, at_most: int) -> int:
    """The largest batch (at least 1, at most ``at_most``) whose forward pass fits in ``budget_gb``."""
    per_window = model_batch_gb(1, n_regions, n_timepoints) - MODEL_FIXED_GB
    fits = math.floor((budget_gb - MODEL_FIXED_GB) / per_window) if per_window > 0 else at_most
    return max(1, min(at_most, fits))
