"""Self-supervised pretraining of BrainSymphony: masked objectives per stream, stage-wise or joint.

Objectives (each a mean squared error on the masked entries only, MODEL.md section 4):

``spatial``
    A fraction of regions is replaced by the spatial stream's learned mask embedding after the input
    projection; a linear decoder (D -> T, :class:`PretrainingDecoders`) reconstructs their series.
``temporal``
    A fraction of time points is replaced by the temporal stream's mask embedding; a linear decoder
    (D -> R) reconstructs those frames.
``context``
    Random (region, time) entries are replaced by the context path's scalar mask token; the context
    decoder reconstructs them from the convolution features.
``perceiver``
    Whole regions are replaced by the context mask token in the series every functional path sees; the
    Perceiver's reconstruction head is scored on exactly those regions (the app's masked-region R^2).
``structural``
    A fraction of connectome pairs (symmetric) is removed from the graph transformer's node features and
    attention weights (they look like absent edges, so nothing leaks) and the edge head predicts their
    values from the two node embeddings.

Training runs in stages (:class:`Stage`): each has its objectives, the modules it trains (the others are
frozen, so their backward pass is skipped), epochs and learning rate; AdamW with linear warm-up and cosine
decay per stage, gradient clipping, optional bf16/fp16 autocast on CUDA. Randomness is derived from the seed
and the step counter, and checkpoints carry the optimiser and RNG states, so a resumed run gives the same
parameters as an uninterrupted one (bit-exact on the same machine and device).

This module knows nothing of files or BIDS: it takes arrays (:class:`TrainingSet`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.errors import CheckpointError, ConfigError
from brainsymphony.model import BrainSymphony

#: Objectives a stage may use.
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
CHECKPOINT_FORMAT = "bsym-pretrain-checkpoint/1"
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
            raise ConfigError(f"stage {self.name!r}: unknown or empty objectives/parts {unknown}; objectives are"
                              f" {OBJECTIVES}, parts {PARTS}")
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
        AdamW decoupled weight decay.
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
    def stagewise(cls, *, stream_epochs: int = 3, perceiver_epochs: int = 2, joint_epochs: int = 1,
                  learning_rate: float = 3e-4, objectives: tuple[str, ...] = OBJECTIVES, **kwargs: Any
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
            stages.append(Stage(name="streams", objectives=streams, trainable=parts, epochs=stream_epochs,
                                learning_rate=learning_rate))
        if perceiver_epochs and "perceiver" in objectives:
            stages.append(Stage(name="perceiver", objectives=("perceiver",), trainable=("perceiver",),
                                epochs=perceiver_epochs, learning_rate=learning_rate))
        if joint_epochs:
            stages.append(_joint_stage(objectives, joint_epochs, learning_rate / 3))
        return cls(stages=tuple(stages), **kwargs)

    @classmethod
    def joint(cls, *, epochs: int = 3, learning_rate: float = 3e-4, objectives: tuple[str, ...] = OBJECTIVES,
              **kwargs: Any) -> PretrainConfig:
        """All objectives and all parts from the start, in one stage."""
        return cls(stages=(_joint_stage(objectives, epochs, learning_rate),), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary (recorded in checkpoints and bundles)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["stages"] = tuple(Stage(**{**s, "objectives": tuple(s["objectives"]),
                                        "trainable": tuple(s["trainable"])}) for s in data["stages"])
        data["masking"] = MaskingRatios(**data["masking"])
        return cls(**data)


def _joint_stage(objectives: tuple[str, ...], epochs: int, learning_rate: float) -> Stage:
    parts = tuple(sorted({p for o in objectives for p in _OBJECTIVE_PARTS[o]}))
    return Stage(name="joint", objectives=tuple(objectives), trainable=parts, epochs=epochs,
                 learning_rate=learning_rate)


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


@dataclass
class TrainingSet:
    """Pretraining data in memory.

    Attributes
    ----------
    fmri : ndarray, shape (N, R, T), float32, or None
        Robust-scaled windows (n/a regions set to 0).
    sc : ndarray, shape (S, R, R), float32, or None
        Signed connectome of each subject.
    subject : ndarray of int, shape (N,)
        Subject (row of ``sc``) of each window; the held-out split is by subject. For a structural-only
        set, N = S and ``subject`` is ``arange(S)``.
    """

    fmri: np.ndarray | None
    sc: np.ndarray | None
    subject: np.ndarray

    def __post_init__(self) -> None:
        self.subject = np.asarray(self.subject, dtype=np.int64)
        if self.fmri is None and self.sc is None:
            raise ValueError("a training set needs fMRI windows, connectomes or both")
        if self.fmri is not None and self.fmri.shape[0] != self.subject.shape[0]:
            raise ValueError(f"{self.fmri.shape[0]} windows but {self.subject.shape[0]} subject indices")
        if self.sc is not None and self.subject.size and self.subject.max() >= self.sc.shape[0]:
            raise ValueError(f"subject index {self.subject.max()} but only {self.sc.shape[0]} connectomes")

    def __len__(self) -> int:
        return int(self.subject.shape[0])


@dataclass
class EpochLog:
    """What one epoch did: mean training losses and the held-out evaluation.

    Attributes
    ----------
    stage : str
    epoch : int
        1-based within the stage.
    step : int
        Optimiser steps done so far (all stages).
    train_loss : dict of str to float
        Mean masked MSE per objective over the epoch.
    heldout : dict of str to float
        See :meth:`Pretrainer.evaluate`.
    seconds : float
        Wall time of the epoch (training and evaluation).
    """

    stage: str
    epoch: int
    step: int
    train_loss: dict[str, float]
    heldout: dict[str, float]
    seconds: float


@dataclass
class StepInfo:
    """Progress of one optimiser step (for progress bars).

    Attributes
    ----------
    stage : str
    epoch, epochs : int
    batch, batches : int
        1-based batch within the epoch and batches per epoch.
    step, total_steps : int
        Steps done over all stages and in total.
    loss : float
        Summed masked loss of the step.
    samples_per_s : float
        Windows per second over the epoch so far.
    """

    stage: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    step: int
    total_steps: int
    loss: float
    samples_per_s: float


class PretrainingDecoders(nn.Module):
    """Decoders used only during pretraining (not part of a weight bundle).

    Parameters
    ----------
    config : BrainSymphonyConfig
        ``spatial``: Linear(D -> T) per masked region token; ``temporal``: Linear(D -> R) per masked frame.
    """

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        self.spatial = nn.Linear(config.width, config.n_timepoints)
        self.temporal = nn.Linear(config.width, config.n_regions)


@dataclass
class _Position:
    stage: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0


class Pretrainer:
    """Runs (and resumes) a pretraining schedule on one model.

    Parameters
    ----------
    model : BrainSymphony
        Trained in place. Spatial/temporal objectives need ``mask_tokens=True``.
    data : TrainingSet
    config : PretrainConfig
    device : str or torch.device
    on_step : callable, optional
        Called with a :class:`StepInfo` after every step.
    on_epoch : callable, optional
        Called with an :class:`EpochLog` after every epoch.
    checkpoint_path : str or Path, optional
        Where :meth:`run` writes checkpoints (``checkpoint_every`` steps and at every epoch end).
    """

    def __init__(self, model: BrainSymphony, data: TrainingSet, *, config: PretrainConfig,
                 device: str | torch.device = "cpu", on_step: Callable[[StepInfo], None] | None = None,
                 on_epoch: Callable[[EpochLog], None] | None = None,
                 checkpoint_path: str | Path | None = None) -> None:
        self.model = model.to(device)
        self.config = config
        self.device = torch.device(device)
        self.data = data
        self.on_step, self.on_epoch = on_step, on_epoch
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self._check_objectives()
        torch.manual_seed(config.seed)
        self.decoders = PretrainingDecoders(model.config).to(device)
        self.train_index, self.heldout_index = self._split()
        self.position = _Position()
        self.history: list[EpochLog] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._baseline_mean = self._region_means()
        self._epoch_sums: dict[str, float] = {}
        self._epoch_steps = 0

    # ------------------------------------------------------------------ schedule
    def batches_per_epoch(self) -> int:
        """Optimiser steps per epoch (the last batch may be smaller)."""
        return math.ceil(len(self.train_index) / self.config.batch_size)

    def total_steps(self) -> int:
        """Steps of the whole schedule."""
        return sum(s.epochs for s in self.config.stages) * self.batches_per_epoch()

    def learning_rate(self, stage: Stage, step_in_stage: int) -> float:
        """Warm-up then cosine decay: the rate of a 0-based step within ``stage``."""
        total = stage.epochs * self.batches_per_epoch()
        warmup = max(1, round(self.config.warmup_fraction * total))
        if step_in_stage < warmup:
            return stage.learning_rate * (step_in_stage + 1) / warmup
        progress = (step_in_stage - warmup) / max(1, total - warmup)
        return stage.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ running
    def run(self, *, max_steps: int | None = None) -> list[EpochLog]:
        """Train from the current position to the end of the schedule (or for ``max_steps`` steps).

        Parameters
        ----------
        max_steps : int, optional
            Stop after this many steps (used to interrupt a run; resume with :meth:`load_checkpoint`).

        Returns
        -------
        list of EpochLog
            The history of the whole run so far.
        """
        done = 0
        stages = self.config.stages
        while self.position.stage < len(stages):
            stage = stages[self.position.stage]
            if self.optimizer is None:
                self._start_stage(stage)
            while self.position.epoch < stage.epochs:
                finished = self._run_epoch(stage, None if max_steps is None else max_steps - done)
                done += finished[0]
                if not finished[1]:
                    if self.checkpoint_path is not None:
                        self.save_checkpoint(self.checkpoint_path)
                    return self.history
            self.position = _Position(stage=self.position.stage + 1, step=self.position.step)
            self.optimizer = None
        return self.history

    def _start_stage(self, stage: Stage) -> None:
        trainable = set(stage.trainable)
        for part in PARTS:
            module = self.decoders if part == "decoders" else getattr(self.model, part, None)
            if module is not None:
                module.requires_grad_(part in trainable)
        if self.model.gate is not None:
            self.model.gate.requires_grad_(False)  # no pretraining objective reaches the gate
        params = [p for p in self._all_parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"stage {stage.name!r} trains {stage.trainable}, which this model does not have")
        self.optimizer = torch.optim.AdamW(params, lr=stage.learning_rate, weight_decay=self.config.weight_decay)
        dtype = self._autocast_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def _run_epoch(self, stage: Stage, budget: int | None) -> tuple[int, bool]:
        """Train the rest of the current epoch; returns (steps done, epoch finished)."""
        started = time.perf_counter()
        order = self._epoch_order()
        batches = self.batches_per_epoch()
        sums = self._epoch_sums
        done = seen = 0
        self.model.train()
        self.decoders.train()
        while self.position.batch < batches:
            if budget is not None and done >= budget:
                return done, False
            b = self.position.batch
            index = order[b * self.config.batch_size:(b + 1) * self.config.batch_size]
            losses = self._train_step(stage, index)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            self.position.batch += 1
            self.position.step += 1
            self._epoch_steps += 1
            done += 1
            seen += len(index)
            if self.on_step is not None:
                self.on_step(StepInfo(stage=stage.name, epoch=self.position.epoch + 1, epochs=stage.epochs,
                                      batch=b + 1, batches=batches, step=self.position.step,
                                      total_steps=self.total_steps(), loss=sum(losses.values()),
                                      samples_per_s=seen / max(time.perf_counter() - started, 1e-9)))
            every = self.config.checkpoint_every
            if every and self.checkpoint_path is not None and self.position.step % every == 0:
                self.save_checkpoint(self.checkpoint_path)
        log = EpochLog(stage=stage.name, epoch=self.position.epoch + 1, step=self.position.step,
                       train_loss={k: v / max(1, self._epoch_steps) for k, v in sums.items()},
                       heldout=self.evaluate(stage.objectives), seconds=time.perf_counter() - started)
        self.history.append(log)
        self.position.epoch += 1
        self.position.batch = 0
        self._epoch_sums, self._epoch_steps = {}, 0
        if self.on_epoch is not None:
            self.on_epoch(log)
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        return done, True

    def _train_step(self, stage: Stage, index: np.ndarray) -> dict[str, float]:
        fmri, sc = self._batch(index)
        stage_index = self.position.stage
        step_in_stage = self.position.epoch * self.batches_per_epoch() + self.position.batch
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.config.stages[stage_index], step_in_stage)
        generator = _generator(self.config.seed, 1, self.position.step)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            losses = {name: self._loss(name, fmri, sc, generator) for name in stage.objectives}
            total = sum(losses.values())
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            if self.config.clip_norm:
                torch.nn.utils.clip_grad_norm_(params, self.config.clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if self.config.clip_norm:
                torch.nn.utils.clip_grad_norm_(params, self.config.clip_norm)
            self.optimizer.step()
        return {name: float(value.detach()) for name, value in losses.items()}

    # ------------------------------------------------------------------ objectives
    def _loss(self, name: str, fmri: torch.Tensor | None, sc: torch.Tensor | None,
              generator: torch.Generator) -> torch.Tensor:
        """Masked MSE of one objective on one batch (masks drawn from ``generator``)."""
        ratios, model = self.config.masking, self.model
        if name == "spatial":
            mask = _random_mask(fmri.shape[:2], ratios.regions, generator).to(self.device)
            embeddings = model.spatial(fmri, region_mask=mask).embeddings
            return _masked_mse(self.decoders.spatial(embeddings).float(), fmri, mask.unsqueeze(-1))
        if name == "temporal":
            mask = _random_mask((fmri.shape[0], fmri.shape[2]), ratios.timepoints, generator).to(self.device)
            embeddings = model.temporal(fmri, time_mask=mask).embeddings  # (B, T, D)
            predicted = self.decoders.temporal(embeddings).transpose(1, 2).float()  # (B, R, T)
            return _masked_mse(predicted, fmri, mask.unsqueeze(1))
        if name == "context":
            mask = _random_mask(fmri.shape, ratios.entries, generator).to(self.device)
            series = model.context.masked_series(fmri, mask)
            return _masked_mse(model.context.decode(model.context.features(series)).float(), fmri, mask)
        if name == "perceiver":
            regions = _random_mask(fmri.shape[:2], ratios.regions, generator).to(self.device)
            reconstruction = self._functional_reconstruction(fmri, regions)
            return _masked_mse(reconstruction.float(), fmri, regions.unsqueeze(-1))
        pairs = _random_pairs(sc.shape[0], sc.shape[1], ratios.edges, generator)
        source, target = pairs[0].to(self.device), pairs[1].to(self.device)
        return self._edge_loss(sc, source, target, scored=ratios.scored_edges)

    def _functional_reconstruction(self, fmri: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
        """Perceiver reconstruction (B, R, T) with the masked regions' series replaced by the mask token."""
        model = self.model
        entry_mask = region_mask.unsqueeze(-1).expand_as(fmri)
        series = model.context.masked_series(fmri, entry_mask)
        spatial = model.spatial(series)
        temporal = model.temporal(series)
        return model.perceiver(spatial.embeddings, temporal.embeddings, series, model.context.conv1d,
                               spatial.positional).reconstruction

    def _edge_loss(self, sc: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *, scored: int) -> torch.Tensor:
        """Hide all given pairs (B, P) from the graph transformer; score the first ``scored`` of them."""
        batch, pairs = source.shape
        edge_mask = torch.zeros_like(sc, dtype=torch.bool)
        rows = torch.arange(batch, device=sc.device).unsqueeze(-1).expand(-1, pairs)
        edge_mask[rows, source, target] = True
        edge_mask[rows, target, source] = True
        embeddings = self.model.structural(sc, edge_mask=edge_mask).embeddings
        source, target, rows = source[:, :scored], target[:, :scored], rows[:, :scored]
        predicted = self.model.structural.edge_logits(embeddings, source, target).float()
        return ((predicted - sc[rows, source, target].float()) ** 2).mean()

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, objectives: tuple[str, ...] | None = None) -> dict[str, float]:
        """Held-out evaluation with fixed masks (same masks every epoch).

        Parameters
        ----------
        objectives : tuple of str, optional
            Objectives whose held-out masked MSE is reported (``loss_<name>``); default: all the model has.

        Returns
        -------
        dict of str to float
            ``loss_<objective>``; for functional models ``r2_masked_regions`` (pooled 1 - SSE/SST over the
            held-out windows, each region masked once in ``eval_folds`` interleaved groups, SST about each
            region's held-out mean) and ``r2_region_mean_baseline`` (the same score for predicting every
            masked region by its training-set mean); for structural models ``r2_masked_edges`` (1 - MSE /
            variance of the masked edge values). Empty when nothing is held out.
        """
        index = self.heldout_index[: self.config.holdout_max_windows]
        if index.size == 0:
            return {}
        was_training = self.model.training
        self.model.eval()
        self.decoders.eval()
        result: dict[str, float] = {}
        try:
            objectives = objectives_for(self.model.config) if objectives is None else objectives
            for start in range(0, index.size, self.config.batch_size):
                chunk = index[start:start + self.config.batch_size]
                fmri, sc = self._batch(chunk)
                generator = _generator(self.config.seed, 2, start)
                with self._autocast():
                    for name in objectives:
                        value = float(self._loss(name, fmri, sc, generator))
                        result[f"loss_{name}"] = result.get(f"loss_{name}", 0.0) + value * len(chunk) / index.size
            if self.model.config.has_functional and self.data.fmri is not None:
                result.update(self._masked_region_r2(index))
            if self.model.config.has_structural and self.data.sc is not None:
                result["r2_masked_edges"] = self._masked_edge_r2(index)
        finally:
            self.model.train(was_training)
            self.decoders.train(was_training)
        return result

    def _masked_region_r2(self, index: np.ndarray) -> dict[str, float]:
        truth = self.data.fmri[index].astype(np.float64)
        sse = np.zeros(truth.shape[1])
        order = np.random.default_rng(self.config.seed).permutation(truth.shape[1])
        folds = self.config.eval_folds
        for fold in range(folds):
            regions = np.sort(order[fold::folds])
            for start in range(0, index.size, self.config.batch_size):
                chunk = index[start:start + self.config.batch_size]
                fmri, _ = self._batch(chunk)
                mask = torch.zeros(fmri.shape[:2], dtype=torch.bool, device=self.device)
                mask[:, regions] = True
                with self._autocast():
                    recon = self._functional_reconstruction(fmri, mask).float().cpu().numpy()
                diff = recon[:, regions] - truth[start:start + len(chunk)][:, regions]
                sse[regions] += (diff**2).sum(axis=(0, 2))
        centred = truth - truth.mean(axis=(0, 2), keepdims=True)
        sst = (centred**2).sum()
        baseline = ((truth - self._baseline_mean[None, :, None]) ** 2).sum()
        return {"r2_masked_regions": float(1.0 - sse.sum() / sst),
                "r2_region_mean_baseline": float(1.0 - baseline / sst)}

    def _masked_edge_r2(self, index: np.ndarray) -> float:
        subjects = np.unique(self.data.subject[index])
        sc = torch.as_tensor(self.data.sc[subjects], dtype=torch.float32, device=self.device)
        source, target = _random_pairs(sc.shape[0], sc.shape[1], self.config.masking.edges,
                                       _generator(self.config.seed, 3, 0))
        source, target = source.to(self.device), target.to(self.device)
        rows = torch.arange(sc.shape[0], device=self.device).unsqueeze(-1).expand_as(source)
        scored = self.config.masking.scored_edges
        truth = sc[rows[:, :scored], source[:, :scored], target[:, :scored]]
        with self._autocast():
            mse = float(self._edge_loss(sc, source, target, scored=scored))
        return 1.0 - mse / max(float(truth.var(unbiased=False)), 1e-12)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path) -> Path:
        """Write everything needed for an exact resume (``torch.save`` of tensors and plain values).

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Path
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model_config": self.model.config.to_dict(),
            "pretrain_config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "decoders": self.decoders.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "position": dataclasses.asdict(self.position),
            "history": [dataclasses.asdict(log) for log in self.history],
            "epoch_sums": dict(self._epoch_sums),
            "epoch_steps": self._epoch_steps,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "n_windows": len(self.data),
        }
        partial = path.with_name(f".{path.name}.partial")
        torch.save(state, partial)
        partial.replace(path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` for the same model, data and config.

        Raises
        ------
        CheckpointError
            Not a pretraining checkpoint, or written for another model/schedule/data size.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable pretraining checkpoint ({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not a bsym pretraining checkpoint; start without --resume")
        for key, mine in (("model_config", self.model.config.to_dict()), ("pretrain_config", self.config.to_dict()),
                          ("n_windows", len(self.data))):
            if _plain(state[key]) != _plain(mine):
                raise CheckpointError(f"{path}: the checkpoint was written with another {key.replace('_', ' ')}; "
                                      "resume with the same model, recipe and corpus, or start afresh")
        self.model.load_state_dict(state["model"])
        self.decoders.load_state_dict(state["decoders"])
        self.position = _Position(**state["position"])
        self.history = [EpochLog(**log) for log in state["history"]]
        self._epoch_sums, self._epoch_steps = dict(state["epoch_sums"]), int(state["epoch_steps"])
        self.optimizer = None
        if self.position.stage < len(self.config.stages):
            self._start_stage(self.config.stages[self.position.stage])
            if state["optimizer"] is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    # ------------------------------------------------------------------ helpers
    def _check_objectives(self) -> None:
        supported = objectives_for(self.model.config)
        for stage in self.config.stages:
            missing = sorted(set(stage.objectives) - set(supported))
            if missing:
                hint = " (build the model with mask_tokens=True)" if {"spatial", "temporal"} & set(missing) else ""
                raise ConfigError(f"stage {stage.name!r} uses objective(s) {missing} that a {self.model.config.mode} "
                                  f"model of this config does not support{hint}; supported: {supported}")
        needs_fmri = any(o in ("spatial", "temporal", "context", "perceiver") for s in self.config.stages
                         for o in s.objectives)
        if needs_fmri and self.data.fmri is None:
            raise ValueError("the schedule has functional objectives but the training set has no fMRI windows")
        if any("structural" in s.objectives for s in self.config.stages) and self.data.sc is None:
            raise ValueError("the schedule has the structural objective but the training set has no connectomes")

    def _split(self) -> tuple[np.ndarray, np.ndarray]:
        subjects = np.unique(self.data.subject)
        rng = np.random.default_rng([self.config.seed, 0])
        n_heldout = int(round(self.config.holdout_fraction * subjects.size))
        if self.config.holdout_fraction > 0 and subjects.size > 1:
            n_heldout = min(max(1, n_heldout), subjects.size - 1)
        heldout = set(rng.permutation(subjects)[:n_heldout].tolist())
        in_heldout = np.isin(self.data.subject, list(heldout))
        return np.flatnonzero(~in_heldout), np.flatnonzero(in_heldout)

    def _region_means(self) -> np.ndarray | None:
        if self.data.fmri is None:
            return None
        return self.data.fmri[self.train_index].astype(np.float64).mean(axis=(0, 2))

    def _epoch_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.config.seed, 1, self.position.stage, self.position.epoch])
        return rng.permutation(self.train_index)

    def _batch(self, index: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        fmri = sc = None
        if self.data.fmri is not None:
            fmri = torch.as_tensor(self.data.fmri[index], dtype=torch.float32, device=self.device)
        if self.data.sc is not None:
            sc = torch.as_tensor(self.data.sc[self.data.subject[index]], dtype=torch.float32, device=self.device)
        return fmri, sc

    def _all_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters()) + list(self.decoders.parameters())

    def _autocast_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or self.config.precision == "fp32":
            return None
        if self.config.precision == "fp16":
            return torch.float16
        if self.config.precision == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def _autocast(self):
        dtype = self._autocast_dtype()
        if dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=dtype)


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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.endswith(".mask_token")
             or k.startswith("context.")}
    clean.load_state_dict(state)
    if neutral_gate and clean.gate is not None:
        clean.gate.neutral_()
    return clean.eval()


def _generator(seed: int, purpose: int, counter: int) -> torch.Generator:
    """A CPU generator determined by (seed, purpose, counter)."""
    state = np.random.SeedSequence([seed, purpose, counter]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _random_mask(shape: tuple[int, ...], ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask of ``shape`` with exactly max(1, round(ratio * n)) True entries per leading row."""
    rows, rest = shape[0], int(np.prod(shape[1:]))
    count = max(1, round(ratio * rest))
    order = torch.rand(rows, rest, generator=generator).argsort(dim=1)
    mask = torch.zeros(rows, rest, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(shape)


def _random_pairs(batch: int, regions: int, ratio: float, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``ratio`` of the R(R-1)/2 region pairs per sample: (source, target) LongTensors (B, P), source < target."""
    upper = torch.triu_indices(regions, regions, offset=1)
    count = max(1, round(ratio * upper.shape[1]))
    chosen = torch.rand(batch, upper.shape[1], generator=generator).argsort(dim=1)[:, :count]
    return upper[0][chosen], upper[1][chosen]


def _masked_mse(predicted: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` (broadcast to ``truth``) is True."""
    weight = mask.expand_as(truth).to(predicted.dtype)
    return (((predicted - truth) ** 2) * weight).sum() / weight.sum().clamp_min(1.0)


def _plain(value: Any) -> Any:
    """Tuples as lists, so configs compare equal after a round trip through a checkpoint."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


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
]
