"""The Perceiver's key stream as one compiled pass on CPU (``brainsymphony/_keystream.c``).

The PyTorch stream (:class:`brainsymphony.perceiver._KeyStream`) is exact but writes every one of a subject's
H * R * R * T exponents to memory and reads it back five times (the exponent's two terms, the exponential, two
reductions). The extension computes each exponent in a register and reduces it where it is made, 8 queries at
a time (16 with AVX-512), relative to an upper bound of each query's scores (:func:`score_bound`). It runs on
CPU float32 without autograd, split over ``torch.get_num_threads()`` threads. Each query's sums are computed
the same way whatever the split and the register width, so the result depends on neither the thread count
nor the build. Where the extension was not built (no C compiler at install time),
:func:`fused_stream_available` is False and the PyTorch stream runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F


def _extension() -> ModuleType | None:
    """The widest build of the extension this CPU runs, or None where it was not built (setup.py)."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        try:
            from brainsymphony import _keystream_avx512  # type: ignore[attr-defined]  # the API of _keystream.pyi

            return _keystream_avx512
        except ImportError:
            pass
    try:
        from brainsymphony import _keystream

        return _keystream
    except ImportError:
        return None


_keystream = _extension()

#: One pool of worker threads per thread count; a forked child (a Nipype worker) starts its own.
_pools: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_pools.clear)


@dataclass
class StreamSums:
    """Sums over the keys of p = exp(score - shift), each query's shift at least its largest score.

    region_sum, region_mass : (B, R, N) sum over t of p / sigma and of p; time_sum : (B, T, N) sum over r of
    p / sigma; time_mass : (B, T, N) sum over r of p, or None; window_sum : (B, K, N) sum of p w / sigma.
    """

    region_sum: torch.Tensor
    region_mass: torch.Tensor
    time_sum: torch.Tensor
    time_mass: torch.Tensor | None
    window_sum: torch.Tensor


def fused_stream_available() -> bool:
    """Whether the compiled key stream was built with this install."""
    return _keystream is not None


def fused_stream_applies(tensor: torch.Tensor) -> bool:
    """Whether the compiled stream can take a stream of ``tensor``'s device and dtype in the current mode."""
    return (
        _keystream is not None
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and not torch.is_grad_enabled()
    )


def score_bound(
    qa: torch.Tensor, qb: torch.Tensor, qm: torch.Tensor, windows: torch.Tensor, inv_sigma: torch.Tensor
) -> torch.Tensor:
    """An upper bound of every query's scores, (B, N), in O(R * (K + 1) * N) per subject.

    (qa + qb + qm' w)_rt <= qa_r + max_t qb_t + relu(qm)' max_t w_r - relu(-qm)' min_t w_r =: x_r, so
    score_rt <= x_r * (max_t 1 / sigma_rt if x_r >= 0 else min_t 1 / sigma_rt). For the published weights it
    sits 2 to 25 above the largest score; the extension checks that it was close enough (see its header).
    """
    upper = (
        qa
        + qb.amax(dim=1, keepdim=True)
        + windows.amax(dim=2) @ qm.clamp_min(0.0)
        - windows.amin(dim=2) @ (-qm).clamp_min(0.0)
    )  # (B, R, N)
    scale = torch.where(upper >= 0, inv_sigma.amax(dim=2, keepdim=True), inv_sigma.amin(dim=2, keepdim=True))
    return (upper * scale).amax(dim=1)


def fused_stream_sums(
    qa: torch.Tensor,
    qb: torch.Tensor,
    qm: torch.Tensor,
    windows: torch.Tensor,
    inv_sigma: torch.Tensor,
    *,
    need_weights: bool,
) -> StreamSums:
    """Stream all keys of a batch in one compiled pass.

    Parameters
    ----------
    qa : Tensor, shape (B, R, N)
        Region term of every query's score.
    qb : Tensor, shape (B, T, N)
        Time term.
    qm : Tensor, shape (B, K, N)
        Window weights: the window term of key (r, t) is qm' w_rt.
    windows : Tensor, shape (B, R, T, K)
        Zero-padded windows w_rt of the series.
    inv_sigma : Tensor, shape (B, R, T)
        1 / sigma_rt, the LayerNorm scale of each key: score = (qa + qb + qm' w) / sigma.
    need_weights : bool
        Also sum p over regions (``time_mass``).

    Returns
    -------
    StreamSums
    """
    if _keystream is None:
        raise RuntimeError("brainsymphony._keystream was not built; reinstall bsym-app where a C compiler is found")
    batch, regions, frames, kernel = windows.shape
    queries = qa.shape[-1]
    lanes = _keystream.LANES
    padded = -(-queries // lanes) * lanes

    def pad(tensor: torch.Tensor) -> torch.Tensor:
        return F.pad(tensor, (0, padded - queries)).contiguous()

    bound = score_bound(qa, qb, qm, windows, inv_sigma)
    inputs = [pad(qa), pad(qb), pad(qm), windows.contiguous(), inv_sigma.contiguous(), pad(bound)]
    region_sum, region_mass = qa.new_empty(batch, regions, padded), qa.new_empty(batch, regions, padded)
    time_sum, window_sum = qa.new_empty(batch, frames, padded), qa.new_empty(batch, kernel, padded)
    time_mass = qa.new_empty(batch, frames, padded) if need_weights else None
    outputs = [region_sum, region_mass, time_sum, window_sum]
    arrays = [tensor.numpy() for tensor in inputs + outputs]
    mass_array = None if time_mass is None else time_mass.numpy()
    shape = (batch, regions, frames, kernel, padded)
    columns = batch * padded // lanes
    threads = max(1, min(torch.get_num_threads(), columns))
    splits = [columns * part // threads for part in range(threads + 1)]  # contiguous columns per thread

    def run(part: int) -> None:
        _keystream.stream(shape, splits[part], splits[part + 1], *arrays, mass_array)

    if threads == 1:
        run(0)
    else:
        pool = _pools.get(threads) or _pools.setdefault(threads, ThreadPoolExecutor(threads, "bsym-keystream"))
        list(pool.map(run, range(threads)))
    return StreamSums(
        region_sum=region_sum[..., :queries],
        region_mass=region_mass[..., :queries],
        time_sum=time_sum[..., :queries],
        time_mass=None if time_mass is None else time_mass[..., :queries],
        window_sum=window_sum[..., :queries],
    )
