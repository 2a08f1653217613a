"""Run a two-node Nipype graph through Nipype's SLURM plugin, configured by a ``--nipype-plugin-file``.

Uses the same code as ``bsym-app --nipype-plugin-file``: :func:`bsym_cli.cli.paths.load_plugin_file` reads the
file and :func:`pipelines.engine.run_workflow` runs the graph. Checks that each node ran as its own SLURM job
(a batch script and a ``slurm-<id>.out`` per node, on a compute node, with ``SLURM_JOB_ID`` set) and that the
numbers passed between the nodes are right: node 1 sums the squares of 0..n-1 for n = 7 (91), node 2
multiplies by 11 (1001).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def sum_of_squares(n: int) -> tuple[int, str]:
    """Sum of k**2 for k < n, and the SLURM job it ran in."""
    import os

    return sum(k * k for k in range(n)), os.environ.get("SLURM_JOB_ID", "")


def times_eleven(value: int) -> tuple[int, str]:
    """value * 11, and the SLURM job it ran in."""
    import os

    return value * 11, os.environ.get("SLURM_JOB_ID", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("plugin_file", type=Path)
    parser.add_argument("work_dir", type=Path)
    args = parser.parse_args()
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    from bsym_cli.cli.paths import load_plugin_file
    from bsym_cli.levels.runtime import ensure_login_name, redirect_caches
    from pipelines.engine import configure_nipype, run_workflow

    redirect_caches(args.work_dir)
    ensure_login_name()
    plugin = load_plugin_file(args.plugin_file)
    configure_nipype(crashdump_dir=args.work_dir / "crash")
    first = Node(Function(input_names=["n"], output_names=["total", "job"], function=sum_of_squares), name="squares")
    first.inputs.n = 7
    second = Node(
        Function(input_names=["value"], output_names=["result", "job"], function=times_eleven), name="times11"
    )
    wf = Workflow(name="slurm_probe", base_dir=str(args.work_dir))
    wf.connect(first, "total", second, "value")
    graph = run_workflow(wf, **plugin)
    results = {node.name: node.result.outputs for node in graph.nodes()}
    failures = []
    if results["squares"].total != 91 or results["times11"].result != 1001:
        got = f"{results['squares'].total}, {results['times11'].result}"
        failures.append(f"wrong numbers: {got} (want 91, 1001)")
    jobs = {name: out.job for name, out in results.items()}
    if not all(jobs.values()) or len(set(jobs.values())) != 2:
        failures.append(f"nodes did not run as two SLURM jobs: {jobs}")
    batch = Path(args.work_dir) / "slurm_probe" / "batch"
    outs = sorted(p.name for p in batch.glob("slurm-*.out"))
    if len(outs) != 2:
        failures.append(f"{batch} has {len(outs)} slurm-*.out files, want 2")
    print(f"nipype SLURM plugin ({plugin['plugin']}): nodes ran as jobs {jobs}; logs {outs}")
    for failure in failures:
        print(f"FAIL {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
