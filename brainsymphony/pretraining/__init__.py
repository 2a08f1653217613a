"""Self-supervised pretraining of BrainSymphony: masked objectives per stream, stage-wise or joint.

``config`` (what decides a run), ``data`` (:class:`TrainingSet`), ``objectives`` (masks and masked losses),
``trainer`` (:class:`Pretrainer`: loop, schedule, evaluation) and ``checkpoint`` (exact resume, and the
inference copy of a pretrained model). See docs/pretraining.md and docs/model.md, "Pretraining objectives".
"""

from brainsymphony.pretraining.checkpoint import inference_model
from brainsymphony.pretraining.config import OBJECTIVES, PARTS, MaskingRatios, PretrainConfig, Stage, objectives_for
from brainsymphony.pretraining.data import TrainingSet
from brainsymphony.pretraining.objectives import PretrainingDecoders
from brainsymphony.pretraining.trainer import EpochLog, Pretrainer, StepInfo, parameter_groups

__all__ = [
    "OBJECTIVES",
    "PARTS",
    "EpochLog",
    "MaskingRatios",
    "PretrainConfig",
    "Pretrainer",
    "PretrainingDecoders",
    "Stage",
    "StepInfo",
    "TrainingSet",
    "inference_model",
    "objectives_for",
    "parameter_groups",
]
