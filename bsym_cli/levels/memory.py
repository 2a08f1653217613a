"""The memory budget of a run (``--mem``): what the run needs, and how Nipype and the model batch keep under it.

With a budget, Nipype's MultiProc starts a node only while the annotated memory of the running nodes fits in
what the budget leaves beside the bsym-app process, each node annotated from the size of its inputs; on CPU the
model's batch shrinks until one forward pass fits. When even one step at a time cannot fit, the run says so at
start and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bsym_cli.bids.inputs import ParticipantInputs
from bsym_cli.cli.config import Config
from bsym_cli.utils.logs import get_logger
from pipelines.fmri.parcellate import DEFAULT_CHUNK
from pipelines.resources import (
    MAIN_PROCESS_GB,
    WORKER_GB,
    bold_step_gb,
    dwi_step_gb,
    largest_batch,
    model_batch_gb,
)


@dataclass(frozen=True)
class MemoryPlan:
    """How a run uses its memory.

    Attributes
    ----------
    budget_gb : float or None
        ``--mem``; None for no budget.
    need_gb : float
        The least the run needs: the bsym-app process plus its heaviest step, run alone.
    heaviest : str
        What that step is.
    batch_size : int
        Windows per forward pass of the model.
    bold_node_gb, dwi_node_gb : float
        Nipype ``mem_gb`` of the heavy fMRI and dMRI nodes (a worker process and the step).
    """

    budget_gb: float | None
    need_gb: float
    heaviest: str
    batch_size: int
    bold_node_gb: float
    dwi_node_gb: float

    @property
    def scheduler_gb(self) -> float | None:
        """What MultiProc may hand to nodes: the budget less the bsym-app process (None without a budget)."""
        if self.budget_gb is None:
            return None
        return max(self.budget_gb - MAIN_PROCESS_GB, 0.1)


def _shape(path) -> tuple[int, ...]:
    import nibabel as nib

    return tuple(int(n) for n in nib.load(path).shape)


def plan_memory(
    config: Config,
    participants: list[ParticipantInputs],
    *,
    n_regions: int,
    n_timepoints: int,
    device: str | None,
) -> MemoryPlan:
    """Size the nodes and the model batch of a run from its inputs' headers and ``config.resources.mem_gb``."""
    budget = config.resources.mem_gb
    bold = [bold_step_gb(_shape(r.bold), DEFAULT_CHUNK) for p in participants for r in p.bold_runs]
    register = config.workflow.registration != "none"
    dwi = [dwi_step_gb(_shape(r.dwi), registration=register) for p in participants for r in p.dwi_runs]
    steps = {"parcellating the largest BOLD run": max(bold, default=0.0)}
    steps["placing the atlas on and tracking the largest DWI"] = max(dwi, default=0.0)
    batch = config.model.batch_size
    if device is not None:
        if budget is not None and device == "cpu":
            batch = largest_batch(budget - MAIN_PROCESS_GB, n_regions, n_timepoints, at_most=batch)
        steps[f"the model, {batch} window(s) at a time"] = model_batch_gb(batch, n_regions, n_timepoints)
    heaviest = max(steps, key=lambda name: steps[name])
    plan = MemoryPlan(
        budget_gb=budget,
        need_gb=MAIN_PROCESS_GB + steps[heaviest],
        heaviest=heaviest,
        batch_size=batch,
        bold_node_gb=WORKER_GB + max(bold, default=0.0),
        dwi_node_gb=WORKER_GB + max(dwi, default=0.0),
    )
    if plan.scheduler_gb is not None:  # an oversized node still runs, alone, and the start says so
        room = plan.scheduler_gb
        plan = replace(plan, bold_node_gb=min(plan.bold_node_gb, room), dwi_node_gb=min(plan.dwi_node_gb, room))
    return plan


def announce(plan: MemoryPlan, requested_batch: int) -> None:
    """Log at start how the run keeps under its budget, or that it cannot."""
    log = get_logger()
    if plan.budget_gb is None:
        return
    budget_mb, need_mb = round(plan.budget_gb * 1000), round(plan.need_gb * 1000) + 1
    if plan.need_gb > plan.budget_gb:
        log.warning(
            "--mem %d MB cannot hold this run: %s needs about %d MB with the bsym-app process itself. The run "
            "goes on, one step at a time, but may exceed the budget (a scheduler would kill it). Give --mem-mb %d "
            "or more.",
            budget_mb,
            plan.heaviest,
            need_mb,
            need_mb,
        )
    else:
        log.info("Memory budget %d MB: the heaviest step (%s) needs about %d MB", budget_mb, plan.heaviest, need_mb)
    if plan.batch_size < requested_batch:
        log.info(
            "Model batch lowered from %d to %d window(s) to stay under --mem %d MB",
            requested_batch,
            plan.batch_size,
            budget_mb,
        )
