"""One participant through the network: scale its windows, embed them with its connectome.

The model stage of the app (``bsym_cli/levels/model_stage.py``) loads the weights, calls :func:`run_model` and
writes what comes back as derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.model.embed import ParticipantEmbedding, embed_participant
from pipelines.model.inputs import ModelInputs
from pipelines.model.scaling import scale_windows, select_statistics


@dataclass
class ModelRun:
    """What the network made of one participant.

    Attributes
    ----------
    embedding : ParticipantEmbedding
    scaling : str or None
        The scaling actually used (``subject``, ``checkpoint`` or ``study``); None without windows.
    incomplete : ndarray of bool, shape (R,)
        Regions that were n/a (scaled to 0) in at least one window.
    """

    embedding: ParticipantEmbedding
    scaling: str | None
    incomplete: np.ndarray


def run_model(
    model,
    inputs: ModelInputs,
    *,
    scaling: str,
    checkpoint: tuple[np.ndarray, np.ndarray] | None = None,
    study: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    precision: str = "fp32",
    seed: int = 0,
) -> ModelRun:
    """Scale and embed one participant.

    Parameters
    ----------
    model : brainsymphony.BrainSymphony
    inputs : ModelInputs
        Unscaled windows (W, R, T) and/or the signed connectome (R, R).
    scaling : {"subject", "checkpoint", "study"}
        See :func:`pipelines.model.scaling.select_statistics`.
    checkpoint, study : tuple of ndarray, shape (R,), optional
        (median, IQR) of the bundle and of the study.
    batch_size : int
        Windows per forward pass.
    device : str
    precision : {"fp32", "bf16"}
        bf16 runs the network under autocast (``brainsymphony/precision.py``).
    seed : int
        Seed of the masked-region grouping.

    Returns
    -------
    ModelRun
    """
    from brainsymphony.precision import autocast

    n_regions = len(inputs.labels)
    scaled, used, incomplete = None, None, np.zeros(n_regions, bool)
    if inputs.windows is not None:
        median, iqr, used = select_statistics(inputs.windows, scaling, checkpoint=checkpoint, study=study)
        scaled, available = scale_windows(inputs.windows, median, iqr)
        incomplete = np.asarray(~available.all(axis=0))
    with autocast(precision, device):
        embedding = embed_participant(model, scaled, inputs.sc, batch_size=batch_size, device=device, seed=seed)
    return ModelRun(embedding=embedding, scaling=used, incomplete=incomplete)
