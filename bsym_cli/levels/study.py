"""Study-wide scaling at the group level: statistics over all participants, then re-embedding in batches.

Reads the model inputs the participant level cached in the work directory
(``<work_dir>/sub-<s>/model/<label>_model_input.npz``). Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank
embeds its share of the participants and rank 0 writes the tables; gloo on CPU, NCCL on GPUs::

    torchrun --nproc_per_node 2 --no-python bsym-app BIDS_DIR OUTPUT_DIR group --scaling study -w WORK_DIR
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bsym_cli.cli.config import Config
from bsym_cli.utils.errors import MissingInputError
from bsym_cli.utils.logs import get_logger


def model_input_files(work_dir: Path, participants: list[tuple[str, str | None]]) -> list[Path]:
    """The cached model inputs of each (participant_id, session_id), in order; exit 66 naming what is missing."""
    from pipelines.model.inputs import cache_path

    files, missing = [], []
    for pid, sid in participants:
        path = cache_path(work_dir, pid.removeprefix("sub-"), pid + (f"_{sid}" if sid else ""))
        (files if path.exists() else missing).append(path)
    if missing:
        raise MissingInputError(
            f"--scaling study needs the model inputs cached by the participant level in the work directory; "
            f"{len(missing)} are missing (first: {missing[0]}). Pass the same -w as the participant runs."
        )
    return files


def _distributed():
    """(rank, world size, torch.distributed or None), initialised from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, dist


def _leave_group(dist) -> None:
    """Wait for every rank, then tear the process group down before this process ends.

    A rank that exits while gloo's threads are still alive aborts in C++ (``terminate called without an
    active exception``, SIGABRT), most often on a busy node where the ranks drift apart.
    """
    dist.barrier()
    dist.destroy_process_group()


def study_embeddings(
    config: Config, table: pd.DataFrame, device: str, *, precision: str = "fp32"
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Re-embed every participant of ``table`` with study-wide scaling statistics, in ``precision`` (resolved).

    Returns (features, statistics) on rank 0 — ``features`` has the columns of the participant feature rows,
    ``statistics`` one row per region (``index``, ``median``, ``iqr``) — and None on other ranks.
    """
    from brainsymphony import load_bundle
    from brainsymphony.precision import autocast
    from bsym_cli.levels.model_stage import weights_path
    from bsym_cli.levels.runtime import freed_memory_kept
    from pipelines.model.embed import embed_many
    from pipelines.model.features import feature_values
    from pipelines.model.inputs import load_model_inputs
    from pipelines.model.scaling import robust_statistics, scale_windows, select_statistics

    log = get_logger()
    rank, world, dist = _distributed()
    keys = [
        (p, s if isinstance(s, str) else None)
        for p, s in zip(table["participant_id"], table["session_id"], strict=True)
    ]
    files = model_input_files(Path(config.execution.work_dir), keys)
    stats = None
    if rank == 0:
        cached = [load_model_inputs(f) for f in files]
        windows = [c.windows for c in cached if c.windows is not None]
        median, iqr = robust_statistics(np.concatenate(windows)) if windows else (None, None)
        stats = {"median": median, "iqr": iqr, "labels": cached[0].labels}
    if dist is not None:
        box = [stats]
        dist.broadcast_object_list(box, src=0)
        stats = box[0]
    model, meta = load_bundle(weights_path(config.model.weights))
    mine = list(range(rank, len(files), world))
    inputs = []
    for i in mine:
        data = load_model_inputs(files[i])
        scaled = None
        if data.windows is not None:
            median, iqr, _ = select_statistics(data.windows, "study", study=(stats["median"], stats["iqr"]))
            scaled = scale_windows(data.windows, median, iqr)[0]
        inputs.append((scaled, data.sc))
    log.info("Study scaling: rank %d/%d embeds %d participant(s) on %s (%s)", rank, world, len(mine), device, precision)
    with freed_memory_kept(), autocast(precision, device):
        embedded = embed_many(model, inputs, batch_size=config.model.batch_size * 4, device=device)
    results = dict(zip(mine, embedded, strict=True))
    if dist is not None:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(results, gathered, dst=0)
        if rank == 0:
            results = {k: v for part in gathered for k, v in part.items()}
        _leave_group(dist)
    if rank != 0:
        return None
    rows = []
    for i, (pid, sid) in enumerate(keys):
        row = {"participant_id": pid, "session_id": sid if sid else np.nan}
        row.update(feature_values({kind: regions.mean(axis=0) for kind, regions in results[i].items()}))
        rows.append(row)
    labels = stats["labels"]
    statistics = pd.DataFrame({"index": labels, "median": stats["median"], "iqr": stats["iqr"]})
    return pd.DataFrame(rows), statistics
