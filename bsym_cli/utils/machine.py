"""What the machine lends this process: CPUs after affinity, the cgroup quota and a SLURM allocation."""

from __future__ import annotations

import math
import os
from pathlib import Path

#: cgroup files that cap CPU time: v2 ``cpu.max`` ("quota period" or "max period"), v1 quota and period.
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _cgroup_cpus() -> int | None:
    """CPUs the cgroup quota allows (rounded up), or None when there is no quota."""
    try:
        if CGROUP_V2.is_file():
            quota, period = CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else math.ceil(int(quota) / int(period))
        if CGROUP_V1[0].is_file():
            quota_us, period_us = (int(p.read_text()) for p in CGROUP_V1)
            return None if quota_us <= 0 else math.ceil(quota_us / period_us)
    except (OSError, ValueError):
        return None
    return None


def available_cpus(environ: os._Environ | dict[str, str] | None = None) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota and ``SLURM_CPUS_PER_TASK``."""
    env = os.environ if environ is None else environ
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]
    quota = _cgroup_cpus()
    if quota:
        counts.append(quota)
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        counts.append(int(slurm))
    return max(1, min(counts))


def default_omp_nthreads(nprocs: int, cpus: int) -> int:
    """Threads per process as fMRIPrep picks them: one CPU left to the scheduler, at most 8."""
    return max(1, min(nprocs - 1 if nprocs > 1 else cpus, 8))
