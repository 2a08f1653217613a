"""What decides a pretraining run besides the data: stages, masking ratios and optimiser settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.errors import ConfigError

#: Objectives a stage may use (docs/model.md, "Pretraining objectives").
OBJECTIVES = ("spatial", "temporal", "context", "perceiver", "structural")
#: Parts a stage may train; ``decoders`` are the pretraining-only decoders of :class:`PretrainingDecoders`.
PARTS = ("spatial", "temporal", "context", "perceiver", "structural", "decoders")
#: Parts each objective needs to train, when the stage trains ``all``.
_OBJECTIVE_PARTS = {
    "spatial": ("spatial", "decoders"),
    "temporal": ("temporal", "decoders"),
    "context": ("context",),
    "perceiver": ("perceiver", "spatial", "temporal", "context"),
    "structural": ("structural",),
}
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True, kw_only=True)
class MaskingRatios:
    """Fraction of tokens masked per objective (release defaults).

    Attributes
    ----------
    regions : float
        Regions masked in the spatial objective and in the Perceiver objective.
    timepoints : float
        Time points masked in the temporal objective.
    entries : float
        (region, time) entries masked in the context objective.
    edges : float
        Region pairs (upper triangle, mirrored) hidden in the structural objective.
    scored_edges : int
        Hidden pairs per sample scored by the edge head (a random subset; the edge head on all hidden pairs
        of 450 regions costs more than the rest of the model).
    """

    regions: float = 0.15
    timepoints: float = 0.15
    entries: float = 0.15
    edges: float = 0.20
    scored_edges: int = 1024


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One training stage.

    Attributes
    ----------
    name : str
    objectives : tuple of str
        Subset of :data:`OBJECTIVES`; their losses are summed.
    trainable : tuple of str
        Subset of :data:`PARTS` whose parameters are updated; everything else is frozen.
    epochs : int
    learning_rate : float
        Peak learning rate (after warm-up).
    """

    name: str
    objectives: tuple[str, ...]
    trainable: tuple[str, ...]
    epochs: int
    learning_rate: float

    def __post_init__(self) -> None:
        unknown = sorted(set(self.objectives) - set(OBJECTIVES)) + sorted(set(self.trainable) - set(PARTS))
        if unknown or not self.objectives or not self.trainable:
            raise ConfigError(
                f"stage {self.name!r}: unknown or empty objectives/parts {unknown}; objectives are"
                f" {OBJECTIVES}, parts {PARTS}"
            )
        if self.epochs < 1 or self.learning_rate <= 0:
            raise ConfigError(f"stage {self.name!r}: epochs must be >= 1 and learning_rate > 0")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """Everything that decides a pretraining run besides the data.

    Attributes
    ----------
    stages : tuple of Stage
    batch_size : int
        Windows per optimiser step.
    weight_decay : float
        AdamW decoupled weight decay, on matrices only (parameters with two or more dimensions); biases,
        norms, gains and mask tokens are not decayed (:func:`~brainsymphony.pretraining.parameter_groups`).
    warmup_fraction : float
        Fraction of each stage's steps with a linear warm-up from 0; cosine decay to 0 after it.
    clip_norm : float
        Maximum global gradient norm (0: no clipping).
    seed : int
        Seed of initialisation, split, batch order, masks and dropout.
    masking : MaskingRatios
    holdout_fraction : float
        Fraction of subjects held out for the per-epoch evaluation (never trained on).
    holdout_max_windows : int
        Held-out windows evaluated per epoch (the first ones of the held-out subjects).
    eval_folds : int
        Interleaved region groups masked in turn for the held-out masked-region R^2.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype on CUDA (``auto``: bf16 where supported, else fp16 with loss scaling); CPU runs fp32.
    checkpoint_every : int
        Steps between checkpoints (0: only at the end of each epoch).
    """

    stages: tuple[Stage, ...]
    batch_size: int = 4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    clip_norm: float = 1.0
    seed: int = 0
    masking: MaskingRatios = field(default_factory=MaskingRatios)
    holdout_fraction: float = 0.1
    holdout_max_windows: int = 32
    eval_folds: int = 5
    precision: Precision = "auto"
    checkpoint_every: int = 0

    @classmethod
    def stagewise(
        cls,
        *,
        stream_epochs: int = 3,
        perceiver_epochs: int = 2,
        joint_epochs: int = 1,
        learning_rate: float = 3e-4,
        objectives: tuple[str, ...] = OBJECTIVES,
        **kwargs: Any,
    ) -> PretrainConfig:
        """Streams first (cheap), then the Perceiver on frozen streams, then everything together.

        Parameters
        ----------
        stream_epochs, perceiver_epochs, joint_epochs : int
            Epochs of the three stages; a stage with 0 epochs is left out.
        learning_rate : float
            Peak rate of the first two stages; the joint stage uses a third of it.
        objectives : tuple of str
            Objectives available to the model (e.g. without ``structural`` for a functional model).
        **kwargs
            Other :class:`PretrainConfig` fields.
        """
        streams = tuple(o for o in ("spatial", "temporal", "context", "structural") if o in objectives)
        stages = []
        if stream_epochs and streams:
            parts = tuple(sorted({p for o in streams for p in _OBJECTIVE_PARTS[o] if p != "perceiver"}))
            stages.append(
                Stage(
                    name="streams",
                    objectives=streams,
                    trainable=parts,
                    epochs=stream_epochs,
                    learning_rate=learning_rate,
                )
            )
        if perceiver_epochs and "perceiver" in objectives:
            stages.append(
                Stage(
                    name="perceiver",
                    objectives=("perceiver",),
                    trainable=("perceiver",),
                    epochs=perceiver_epochs,
                    learning_rate=learning_rate,
                )
            )
        if joint_epochs:
            stages.append(_joint_stage(objectives, joint_epochs, learning_rate / 3))
        return cls(stages=tuple(stages), **kwargs)

    @classmethod
    def joint(
        cls, *, epochs: int = 3, learning_rate: float = 3e-4, objectives: tuple[str, ...] = OBJECTIVES, **kwargs: Any
    ) -> PretrainConfig:
        """All objectives and all parts from the start, in one stage."""
        return cls(stages=(_joint_stage(objectives, epochs, learning_rate),), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary (recorded in checkpoints and bundles)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["stages"] = tuple(
            Stage(**{**s, "objectives": tuple(s["objectives"]), "trainable": tuple(s["trainable"])})
            for s in data["stages"]
        )
        data["masking"] = MaskingRatios(**data["masking"])
        return cls(**data)


def _joint_stage(objectives: tuple[str, ...], epochs: int, learning_rate: float) -> Stage:
    parts = tuple(sorted({p for o in objectives for p in _OBJECTIVE_PARTS[o]}))
    return Stage(
        name="joint", objectives=tuple(objectives), trainable=parts, epochs=epochs, learning_rate=learning_rate
    )


def objectives_for(config: BrainSymphonyConfig) -> tuple[str, ...]:
    """Objectives a model of ``config`` supports (spatial/temporal need ``mask_tokens=True``).

    Parameters
    ----------
    config : BrainSymphonyConfig

    Returns
    -------
    tuple of str
    """
    found = []
    if config.has_functional:
        found += (["spatial", "temporal"] if config.mask_tokens else []) + ["context", "perceiver"]
    if config.has_structural:
        found.append("structural")
    return tuple(o for o in OBJECTIVES if o in found)
