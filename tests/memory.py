"""Measure the memory a command really holds: the proportional set size (PSS) of its process tree.

PSS splits pages shared between processes (a forked worker's copy-on-write pages) among them, so the sum over
the tree is what the tree holds, as a scheduler's cgroup counts it; the sum of RSS would count shared pages
once per process.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def tree_pss_mb(root: int) -> float:
    """PSS of ``root`` and all its descendants, in MB."""
    tree, stack, total_kb = _children(), [root], 0
    while stack:
        pid = stack.pop()
        stack += tree.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def run_measured(command: list[str], *, interval: float = 0.1, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` (``subprocess.Popen`` keywords), sampling its tree's PSS; return the result (text
    output) and the peak in MB."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, **kwargs)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, tree_pss_mb(process.pid))
            time.sleep(interval)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read()), peak


def available() -> bool:
    """Whether this kernel reports PSS (``/proc/self/smaps_rollup``, Linux 4.14+)."""
    return os.path.exists("/proc/self/smaps_rollup")
