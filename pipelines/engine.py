"""Running Nipype graphs: quiet, fast polling, crash files where the user will look."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.errors import InputDataError, MissingInputError

#: Seconds between polls: short for local plugins (Nipype's default, 2 s, makes small graphs crawl), long
#: for cluster plugins, whose polls query the scheduler (``squeue``).
POLL_SLEEP_S = 0.05
CLUSTER_POLL_SLEEP_S = 3.0
#: Seconds between the resource monitor's samples of a node's memory and CPU use.
RESOURCE_MONITOR_S = 0.5
#: The execution settings bsym-app chooses that Nipype reads from each graph's and node's own copy.
GRAPH_SETTINGS = ("poll_sleep_duration", "stop_on_first_crash", "crashfile_format", "remove_unnecessary_outputs")


def configure_nipype(
    *,
    crashdump_dir: str | Path | None = None,
    stop_on_first_crash: bool = False,
    verbose: bool = False,
    resource_monitor: bool = False,
) -> None:
    """Set Nipype's global configuration for one bsym run (no telemetry, fast polling, crash folder).

    Nipype's own messages are shown from WARNING up, or from INFO up with ``verbose`` (``-vv``). With
    ``resource_monitor``, every node's result file records its peak memory (``runtime.mem_peak_gb``) and CPU
    use, sampled every :data:`RESOURCE_MONITOR_S` seconds.
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from nipype import config, logging

    config.set("execution", "poll_sleep_duration", str(POLL_SLEEP_S))
    config.set("execution", "stop_on_first_crash", str(stop_on_first_crash).lower())
    config.set("execution", "crashfile_format", "txt")
    config.set("execution", "remove_unnecessary_outputs", "false")
    config.resource_monitor = resource_monitor  # the property, so Nipype's cached answer follows
    if resource_monitor:
        config.set("execution", "resource_monitor_frequency", str(RESOURCE_MONITOR_S))
    level = "INFO" if verbose else "WARNING"
    for logger in ("workflow_level", "interface_level", "utils_level"):
        config.set("logging", logger, level)
    if crashdump_dir is not None:
        Path(crashdump_dir).mkdir(parents=True, exist_ok=True)
        config.set("execution", "crashdump_dir", str(crashdump_dir))
    logging.update_logging(config)


def run_workflow(
    workflow: Any,
    *,
    nprocs: int = 1,
    mem_gb: float | None = None,
    plugin: str | None = None,
    plugin_args: dict | None = None,
) -> Any:
    """Run ``workflow`` with MultiProc (``nprocs`` > 1), Linear, or a named plugin; return the exec graph.

    The graph runs with the settings of :func:`configure_nipype` even when it was built before them: Nipype
    copies its global configuration into every workflow and node it creates, and those copies win when the
    graph runs. A graph built first would poll every 2 s (Nipype's default: a step waits up to 2 s to start,
    and a fully cached rerun of a participant took 22 s), delete outputs no step uses, and ignore
    ``stop_on_first_crash``.

    With the resource monitor on, the graph runs from inside ``workflow.base_dir``: Nipype's monitor leaves a
    ``.proc-<pid>_...`` file of samples per step in the current directory, which belongs with the work files,
    not wherever the user started bsym-app.
    """
    from nipype import config

    args = dict(plugin_args or {})
    local = plugin in (None, "Linear", "MultiProc")
    config.set("execution", "poll_sleep_duration", str(POLL_SLEEP_S if local else CLUSTER_POLL_SLEEP_S))
    _update_execution(workflow, {key: config.get("execution", key) for key in GRAPH_SETTINGS})
    if plugin is None:
        plugin = "MultiProc" if nprocs > 1 else "Linear"
        if plugin == "MultiProc":
            args.setdefault("n_procs", nprocs)
            if mem_gb:
                args.setdefault("memory_gb", mem_gb)
            args.setdefault("raise_insufficient", False)
    if not config.resource_monitor or workflow.base_dir is None:
        return in_fresh_thread(workflow.run, plugin=plugin, plugin_args=args)
    Path(workflow.base_dir).mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(workflow.base_dir):
        return in_fresh_thread(workflow.run, plugin=plugin, plugin_args=args)


def in_fresh_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` in a new thread; return what it returns, raise what it raises.

    Nipype's MultiProc forks its workers from the thread that runs the graph. GNU OpenMP keeps a thread pool
    per thread that has opened a parallel region, and a child forked from such a thread hangs in its first
    parallel region (DIPY's tracking, torch). bsym-app's main thread opens them: it loads the weights and runs
    the model stage of the participant before. A thread that never has forks clean workers.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="nipype-graph", daemon=True)
    thread.start()
    while thread.is_alive():  # short joins, so the main thread still takes Ctrl-C
        thread.join(0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def set_crash_folder(workflow: Any, folder: str | Path) -> None:
    """Send the crash files of every node of ``workflow`` to ``folder``, as text.

    Nipype copies its global configuration into each node when the node is created, and a node's own
    copy wins over the configuration in force when the graph runs; so the folder is set on the nodes.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    _update_execution(workflow, {"crashdump_dir": str(folder), "crashfile_format": "txt"})


def _update_execution(workflow: Any, settings: dict[str, str]) -> None:
    """Set ``settings`` in the ``execution`` section of ``workflow``'s own configuration and its nodes'."""
    for element in (workflow, *workflow._get_all_nodes()):
        element.config = element.config or {}
        element.config.setdefault("execution", {}).update(settings)


_ERROR_LINE = re.compile(r"^\s*pipelines\.errors\.(InputDataError|MissingInputError): (.+)$", re.MULTILINE)


def input_errors(crash_files: list[Path]) -> list[InputDataError | MissingInputError]:
    """The input errors (:mod:`pipelines.errors`) that made nodes crash, read back from their crash files.

    A node runs in its own process and Nipype reports its failure as text; this recovers the error a
    scientific function raised, so the caller can give the user its message and exit code.
    """
    kinds: dict[str, type[InputDataError | MissingInputError]] = {
        "InputDataError": InputDataError,
        "MissingInputError": MissingInputError,
    }
    errors: list[InputDataError | MissingInputError] = []
    for path in crash_files:
        found = _ERROR_LINE.findall(Path(path).read_text(errors="replace"))
        if found:
            kind, message = found[-1]
            errors.append(kinds[kind](message.strip()))
    return errors
