"""Running Nipype graphs: quiet, fast polling, crash files where the user will look."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pipelines.errors import InputDataError, MissingInputError

#: Seconds between polls: short for local plugins (Nipype's default, 2 s, makes small graphs crawl), long
#: for cluster plugins, whose polls query the scheduler (``squeue``).
POLL_SLEEP_S = 0.05
CLUSTER_POLL_SLEEP_S = 3.0


def configure_nipype(
    *, crashdump_dir: str | Path | None = None, stop_on_first_crash: bool = False, verbose: bool = False
) -> None:
    """Set Nipype's global configuration for one bsym run (no telemetry, fast polling, crash folder).

    Nipype's own messages are shown from WARNING up, or from INFO up with ``verbose`` (``-vv``).
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from nipype import config, logging

    config.set("execution", "poll_sleep_duration", str(POLL_SLEEP_S))
    config.set("execution", "stop_on_first_crash", str(stop_on_first_crash).lower())
    config.set("execution", "crashfile_format", "txt")
    config.set("execution", "remove_unnecessary_outputs", "false")
    config.set("monitoring", "enabled", "false")
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
    """Run ``workflow`` with MultiProc (``nprocs`` > 1), Linear, or a named plugin; return the exec graph."""
    from nipype import config

    args = dict(plugin_args or {})
    local = plugin in (None, "Linear", "MultiProc")
    config.set("execution", "poll_sleep_duration", str(POLL_SLEEP_S if local else CLUSTER_POLL_SLEEP_S))
    if plugin is None:
        plugin = "MultiProc" if nprocs > 1 else "Linear"
        if plugin == "MultiProc":
            args.setdefault("n_procs", nprocs)
            if mem_gb:
                args.setdefault("memory_gb", mem_gb)
            args.setdefault("raise_insufficient", False)
    return workflow.run(plugin=plugin, plugin_args=args)


def set_crash_folder(workflow: Any, folder: str | Path) -> None:
    """Send the crash files of every node of ``workflow`` to ``folder``, as text.

    Nipype copies its global configuration into each node when the node is created, and a node's own
    copy wins over the configuration in force when the graph runs; so the folder is set on the nodes.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    settings = {"crashdump_dir": str(folder), "crashfile_format": "txt"}
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
