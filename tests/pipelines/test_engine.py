"""Running Nipype graphs from a process that has already used OpenMP threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def _write_two(folder):
    from pathlib import Path

    kept, spare = Path(folder) / "kept.txt", Path(folder) / "spare.txt"
    kept.write_text("kept")
    spare.write_text("spare")
    return str(kept), str(spare)


def _read(path):
    from pathlib import Path

    return Path(path).read_text()


def _fail(value):
    raise ValueError(f"failing on purpose ({value})")


def _identity(value):
    return value


@pytest.fixture
def nipype_defaults():
    """Nipype's own configuration before the test (graphs built now copy it) and after."""
    from nipype import config

    config.set_default_config()
    yield
    config.set_default_config()


def test_a_graph_built_before_the_configuration_runs_with_it(tmp_path, monkeypatch, nipype_defaults):
    """bsym-app builds the participant's graph, then configures Nipype, then runs it.

    Nipype's workflows and nodes keep the configuration of the moment they were created; the run must use
    bsym-app's: a short scheduler poll, and outputs that no step reads left in the work folder.
    """
    import nipype.pipeline.plugins.base as plugin_base
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    from pipelines.engine import POLL_SLEEP_S, configure_nipype, run_workflow

    workflow = Workflow(name="late_config_wf", base_dir=str(tmp_path))
    write = Node(Function(function=_write_two, input_names=["folder"], output_names=["kept", "spare"]), name="write")
    write.inputs.folder = str(tmp_path)
    read = Node(Function(function=_read, input_names=["path"], output_names=["text"]), name="read")
    workflow.connect(write, "kept", read, "path")
    configure_nipype()
    sleeps: list[float] = []
    monkeypatch.setattr(plugin_base, "sleep", lambda seconds: sleeps.append(seconds))
    graph = run_workflow(workflow, nprocs=2)

    assert [n.result.outputs.text for n in graph.nodes() if n.name == "read"] == ["kept"]
    assert sleeps and max(sleeps) <= POLL_SLEEP_S  # Nipype's default poll is 2 s
    assert (tmp_path / "spare.txt").exists()  # remove_unnecessary_outputs would have deleted it


@pytest.mark.parametrize("stop", [True, False])
def test_stop_on_first_crash_holds_for_a_graph_built_before_the_configuration(tmp_path, stop, nipype_defaults):
    """``--stop-on-first-crash``: the steps after a failed one are not started (serial run, order of creation)."""
    from nipype import Node, Workflow
    from nipype.interfaces.utility import Function

    from pipelines.engine import configure_nipype, run_workflow, set_crash_folder

    workflow = Workflow(name="crash_wf", base_dir=str(tmp_path / "work"))
    crash = Node(Function(function=_fail, input_names=["value"], output_names=["out"]), name="a_crash")
    crash.inputs.value = 0
    workflow.add_nodes([crash])
    for i in range(3):
        later = Node(Function(function=_identity, input_names=["value"], output_names=["out"]), name=f"b_later{i}")
        later.inputs.value = i
        workflow.add_nodes([later])
    configure_nipype(crashdump_dir=tmp_path / "crash", stop_on_first_crash=stop)
    set_crash_folder(workflow, tmp_path / "crash")  # as bsym-app does; else the crash file lands in the cwd
    with pytest.raises(RuntimeError, match="failing on purpose"):  # NodeExecutionError
        run_workflow(workflow)

    ran = sorted(p.parent.name for p in (tmp_path / "work" / "crash_wf").glob("b_later*/result_*.pklz"))
    assert ran == ([] if stop else ["b_later0", "b_later1", "b_later2"])
    assert len(list((tmp_path / "crash").glob("crash-*a_crash*.txt"))) == 1
