"""Pretraining checkpoints (exact resume) and the inference copy of a pretrained model for a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from brainsymphony.errors import CheckpointError
from brainsymphony.model import BrainSymphony

#: Format tag of a checkpoint; /2 keeps weight decay off biases, norms and mask tokens (AdamW groups).
CHECKPOINT_FORMAT = "bsym-pretrain-checkpoint/2"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain values) atomically with the format tag.

    Parameters
    ----------
    path : str or Path
    state : dict
        What the trainer needs for an exact resume (:meth:`Pretrainer.save_checkpoint`).

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, partial)
    partial.replace(path)
    return path


def load_checkpoint(path: str | Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint` and check that it belongs to this run.

    Parameters
    ----------
    path : str or Path
    expected : dict
        Entries that must equal the stored ones (model config, pretraining config, data size).

    Returns
    -------
    dict
        The stored state, on the CPU.

    Raises
    ------
    CheckpointError
        Not a readable pretraining checkpoint of this format, or written for another run.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable pretraining checkpoint ({exc})") from exc
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith("bsym-pretrain-checkpoint/") and found != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: a {found} checkpoint of an older bsym-app (this one writes "
            f"{CHECKPOINT_FORMAT}, with another weight decay); start without --resume"
        )
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a bsym pretraining checkpoint; start without --resume")
    for key, mine in expected.items():
        if _plain(state[key]) != _plain(mine):
            raise CheckpointError(
                f"{path}: the checkpoint was written with another {key.replace('_', ' ')}; "
                "resume with the same model, recipe and corpus, or start afresh"
            )
    return state


def inference_model(model: BrainSymphony, *, neutral_gate: bool = True) -> BrainSymphony:
    """A copy without the pretraining-only mask embeddings (``mask_tokens=False``), ready for a bundle.

    Parameters
    ----------
    model : BrainSymphony
    neutral_gate : bool
        Set the fusion gate to g = 0.5 (no pretraining objective trains it).

    Returns
    -------
    BrainSymphony
        In eval mode, on the CPU; same weights otherwise.
    """
    config = model.config.replace(mask_tokens=False)
    clean = BrainSymphony(config)
    state = {
        k: v.detach().cpu()
        for k, v in model.state_dict().items()
        if not k.endswith(".mask_token") or k.startswith("context.")
    }
    clean.load_state_dict(state)
    if neutral_gate and clean.gate is not None:
        clean.gate.neutral_()
    return clean.eval()


def _plain(value: Any) -> Any:
    """Tuples as lists, so configs compare equal after a round trip through a checkpoint."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
