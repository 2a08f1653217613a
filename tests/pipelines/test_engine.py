"""Running Nipype graphs from a process that has already used OpenMP threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import torch
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    from pipelines.engine import configure_nipype, run_workflow


    def threaded_product(size):
        import torch

        torch.set_num_threads(2)
        a = torch.ones(size, size)
        return float((a @ a).sum())  # an OpenMP parallel region in the forked worker


    torch.set_num_threads(2)
    (torch.randn(512, 512) @ torch.randn(512, 512)).sum()  # the main thread opens its OpenMP pool
    configure_nipype()
    workflow = Workflow(name="openmp_wf", base_dir=WORK)
    for i in range(2):
        workflow.add_nodes([Node(Function(function=threaded_product, input_names=["size"]), name=f"n{i}")])
        workflow.get_node(f"n{i}").inputs.size = 256 + i
    graph = run_workflow(workflow, nprocs=2)
    print("finished", sorted(n.result.outputs.out for n in graph.nodes()))
    """
)


def test_multiproc_workers_forked_after_the_main_thread_used_openmp_do_not_hang(tmp_path):
    """bsym-app loads weights and runs the previous participant's model before the next graph forks."""
    script = tmp_path / "graph.py"  # a file: Nipype's Function node reads the function's source
    script.write_text(f"WORK = {str(tmp_path)!r}\n{SCRIPT}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished [16777216.0, 16974592.0]" in done.stdout  # 256**3 and 257**3: both workers computed
