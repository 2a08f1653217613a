"""Inference precision: float32, or bfloat16 autocast on the hardware where it is faster.

Measured with ``bsym bench model`` at batch 4 (README.md, "Performance"), each at a cosine of at least 0.99998
to fp32: bf16 autocast ran at 0.4x fp32 on an AVX2 CPU, 1.04-1.13x on 2 cores with AVX-512 BF16 but no AMX,
1.36x on a 16-core server CPU, and 0.76x on an H200 (the model is launch-bound there). The Perceiver's softmax
stream stays in fp32 under autocast (``brainsymphony/perceiver.py``), so only the matrix products of the other
blocks can gain, and they gain most where the CPU multiplies bf16 in tiles (AMX): 1.05-1.23x over several runs
on 2 cores of an Intel Xeon with AMX. ``auto`` therefore means bf16 on CPUs with AMX that oneDNN may use
(``ONEDNN_MAX_CPU_ISA`` unset, ``ALL``, ``DEFAULT`` or an AMX level) and fp32 everywhere else; ``bsym bench
model`` prints what it picks and what bf16 gains.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path

import torch

#: Values of ``--precision``.
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(requested: str, device: str | torch.device) -> str:
    """``"fp32"`` or ``"bf16"`` for a ``--precision`` value on ``device``.

    Raises
    ------
    ValueError
        An unknown value, or bf16 on a CUDA device without bf16 support.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if requested == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp32")
    if requested != "auto":
        return requested
    return "bf16" if kind == "cpu" and cpu_has_amx() and onednn_may_use_amx() else "fp32"


def autocast(precision: str, device: str | torch.device) -> AbstractContextManager:
    """The autocast context of a resolved precision (no change for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def onednn_may_use_amx(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` leaves oneDNN, which runs torch's bf16 matrix products, its AMX kernels.

    Capped below AMX (as ``AVX2`` for portable results), bf16 runs on slower kernels and does not pay.
    """
    cap = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap in ("", "ALL", "DEFAULT") or "AMX" in cap


@lru_cache
def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU multiplies bf16 tiles (the ``amx_bf16`` flag); False where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags
