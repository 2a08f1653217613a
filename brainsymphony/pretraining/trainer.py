"""``Pretrainer``: the stage-wise training loop, its learning-rate schedule and the held-out evaluation.

Each stage has its objectives, the modules it trains (the others are frozen, so their backward pass is
skipped), epochs and learning rate; AdamW (weight decay on matrices only, :func:`parameter_groups`) with
linear warm-up and cosine decay per stage, gradient clipping, optional bf16/fp16 autocast on CUDA.
Randomness is derived from the seed and the step counter, and checkpoints carry the optimiser and RNG states,
so a resumed run gives the same parameters as an uninterrupted one (bit-exact on the same machine and device).

This module knows nothing of files or BIDS: it takes arrays (:class:`TrainingSet`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainsymphony.errors import ConfigError
from brainsymphony.inference import masked_region_errors
from brainsymphony.model import BrainSymphony
from brainsymphony.pretraining import checkpoint
from brainsymphony.pretraining.config import PARTS, PretrainConfig, Stage, objectives_for
from brainsymphony.pretraining.data import TrainingSet
from brainsymphony.pretraining.objectives import MaskedObjectives, PretrainingDecoders, random_pairs, seeded_generator

#: ``purpose`` of :func:`seeded_generator`: training masks, held-out losses, held-out edge R^2.
_TRAIN_MASKS, _HELDOUT_MASKS, _HELDOUT_EDGES = 1, 2, 3


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


@dataclass
class _Position:
    stage: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0


def parameter_groups(parameters: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay the matrices, nothing else (as nanoGPT's ``configure_optimizers``).

    Matrices are the parameters with two or more dimensions: Linear, attention and convolution weights and
    the embedding-like tables (positional tables, Perceiver latents). Biases, LayerNorm gains, the scalar
    ``alpha`` and the mask tokens (0-D or 1-D) are not decayed. Frozen parameters are left out.

    Parameters
    ----------
    parameters : iterable of Parameter
        E.g. ``model.parameters()``; the order is kept within each group.
    weight_decay : float

    Returns
    -------
    list of dict
        ``[{"params": matrices, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]``,
        without empty groups.
    """
    trainable = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


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

    def __init__(
        self,
        model: BrainSymphony,
        data: TrainingSet,
        *,
        config: PretrainConfig,
        device: str | torch.device = "cpu",
        on_step: Callable[[StepInfo], None] | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        checkpoint_path: str | Path | None = None,
    ) -> None:
        self.model = model.to(device)
        self.config = config
        self.device = torch.device(device)
        self.data = data
        self.on_step, self.on_epoch = on_step, on_epoch
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self._check_objectives()
        torch.manual_seed(config.seed)
        self.decoders = PretrainingDecoders(model.config).to(device)
        self.masked = MaskedObjectives(self.model, self.decoders, config.masking)
        self.train_index, self.heldout_index = self._split()
        self.position = _Position()
        self.history: list[EpochLog] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._baseline_mean = self._region_means()
        self._epoch_sums: dict[str, float] = {}
        self._epoch_steps = 0
        self._trainable: list[nn.Parameter] = []  # the stage's, in module order (gradient clipping)

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
            optimizer = self._start_stage(stage) if self.optimizer is None else self.optimizer
            while self.position.epoch < stage.epochs:
                steps, finished = self._run_epoch(stage, optimizer, None if max_steps is None else max_steps - done)
                done += steps
                if not finished:
                    if self.checkpoint_path is not None:
                        self.save_checkpoint(self.checkpoint_path)
                    return self.history
            self.position = _Position(stage=self.position.stage + 1, step=self.position.step)
            self.optimizer = None
        return self.history

    def _start_stage(self, stage: Stage) -> torch.optim.Optimizer:
        """Freeze what ``stage`` does not train and build its optimiser (and loss scaler for fp16)."""
        trainable = set(stage.trainable)
        for part in PARTS:
            module = self.decoders if part == "decoders" else getattr(self.model, part, None)
            if module is not None:
                module.requires_grad_(part in trainable)
        if self.model.gate is not None:
            self.model.gate.requires_grad_(False)  # no pretraining objective reaches the gate
        self._trainable = [p for p in [*self.model.parameters(), *self.decoders.parameters()] if p.requires_grad]
        groups = parameter_groups(self._trainable, self.config.weight_decay)
        if not groups:
            raise ConfigError(f"stage {stage.name!r} trains {stage.trainable}, which this model does not have")
        self.optimizer = torch.optim.AdamW(groups, lr=stage.learning_rate)
        dtype = self._autocast_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return self.optimizer

    def _run_epoch(self, stage: Stage, optimizer: torch.optim.Optimizer, budget: int | None) -> tuple[int, bool]:
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
            index = order[b * self.config.batch_size : (b + 1) * self.config.batch_size]
            losses = self._train_step(stage, optimizer, index)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            self.position.batch += 1
            self.position.step += 1
            self._epoch_steps += 1
            done += 1
            seen += len(index)
            if self.on_step is not None:
                self.on_step(
                    StepInfo(
                        stage=stage.name,
                        epoch=self.position.epoch + 1,
                        epochs=stage.epochs,
                        batch=b + 1,
                        batches=batches,
                        step=self.position.step,
                        total_steps=self.total_steps(),
                        loss=sum(losses.values()),
                        samples_per_s=seen / max(time.perf_counter() - started, 1e-9),
                    )
                )
            every = self.config.checkpoint_every
            if every and self.checkpoint_path is not None and self.position.step % every == 0:
                self.save_checkpoint(self.checkpoint_path)
        log = EpochLog(
            stage=stage.name,
            epoch=self.position.epoch + 1,
            step=self.position.step,
            train_loss={k: v / max(1, self._epoch_steps) for k, v in sums.items()},
            heldout=self.evaluate(stage.objectives),
            seconds=time.perf_counter() - started,
        )
        self.history.append(log)
        self.position.epoch += 1
        self.position.batch = 0
        self._epoch_sums, self._epoch_steps = {}, 0
        if self.on_epoch is not None:
            self.on_epoch(log)
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        return done, True

    def _train_step(self, stage: Stage, optimizer: torch.optim.Optimizer, index: np.ndarray) -> dict[str, float]:
        """One optimiser step on the windows ``index``; returns each objective's loss."""
        fmri, sc = self._batch(index)
        step_in_stage = self.position.epoch * self.batches_per_epoch() + self.position.batch
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate(self.config.stages[self.position.stage], step_in_stage)
        generator = seeded_generator(self.config.seed, _TRAIN_MASKS, self.position.step)
        optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            losses = {name: self.masked.loss(name, fmri, sc, generator) for name in stage.objectives}
            total: torch.Tensor = functools.reduce(operator.add, losses.values())
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(optimizer)
            if self.config.clip_norm:
                torch.nn.utils.clip_grad_norm_(self._trainable, self.config.clip_norm)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            total.backward()
            if self.config.clip_norm:
                torch.nn.utils.clip_grad_norm_(self._trainable, self.config.clip_norm)
            optimizer.step()
        return {name: float(value.detach()) for name, value in losses.items()}

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
                chunk = index[start : start + self.config.batch_size]
                fmri, sc = self._batch(chunk)
                generator = seeded_generator(self.config.seed, _HELDOUT_MASKS, start)
                with self._autocast():
                    for name in objectives:
                        value = float(self.masked.loss(name, fmri, sc, generator))
                        result[f"loss_{name}"] = result.get(f"loss_{name}", 0.0) + value * len(chunk) / index.size
            if self.model.config.has_functional and self.data.fmri is not None:
                result.update(self._masked_region_r2(self.data.fmri, index))
            if self.model.config.has_structural and self.data.sc is not None:
                result["r2_masked_edges"] = self._masked_edge_r2(self.data.sc, index)
        finally:
            self.model.train(was_training)
            self.decoders.train(was_training)
        return result

    def _masked_region_r2(self, windows: np.ndarray, index: np.ndarray) -> dict[str, float]:
        """Pooled masked-region R^2 of the windows ``index`` of ``windows`` (N, R, T), and its baseline."""
        truth = windows[index].astype(np.float64)

        def reconstruct(fmri: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.masked.reconstruction(fmri, region_mask)

        sse, per_region = masked_region_errors(
            reconstruct,
            windows[index],
            folds=self.config.eval_folds,
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            device=self.device,
        )
        sst = per_region.sum()
        assert self._baseline_mean is not None  # set whenever the data has windows
        baseline = ((truth - self._baseline_mean[None, :, None]) ** 2).sum()
        return {
            "r2_masked_regions": float(1.0 - sse.sum() / sst),
            "r2_region_mean_baseline": float(1.0 - baseline / sst),
        }

    def _masked_edge_r2(self, connectomes: np.ndarray, index: np.ndarray) -> float:
        """1 - MSE / variance of the hidden edges of the held-out subjects' ``connectomes`` (S, R, R)."""
        subjects = np.unique(self.data.subject[index])
        sc = torch.as_tensor(connectomes[subjects], dtype=torch.float32, device=self.device)
        masking = self.config.masking
        generator = seeded_generator(self.config.seed, _HELDOUT_EDGES, 0)
        source, target = (t.to(self.device) for t in random_pairs(sc.shape[0], sc.shape[1], masking.edges, generator))
        rows = torch.arange(sc.shape[0], device=self.device).unsqueeze(-1).expand_as(source)
        scored = masking.scored_edges
        truth = sc[rows[:, :scored], source[:, :scored], target[:, :scored]]
        with self._autocast():
            mse = float(self.masked.edge_loss(sc, source, target, scored=scored))
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
        return checkpoint.save_checkpoint(
            path,
            {
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
            },
        )

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` for the same model, data and config.

        Raises
        ------
        CheckpointError
            Not a pretraining checkpoint, or written for another model/schedule/data size.
        """
        state = checkpoint.load_checkpoint(
            path,
            {
                "model_config": self.model.config.to_dict(),
                "pretrain_config": self.config.to_dict(),
                "n_windows": len(self.data),
            },
        )
        self.model.load_state_dict(state["model"])
        self.decoders.load_state_dict(state["decoders"])
        self.position = _Position(**state["position"])
        self.history = [EpochLog(**log) for log in state["history"]]
        self._epoch_sums, self._epoch_steps = dict(state["epoch_sums"]), int(state["epoch_steps"])
        self.optimizer = None
        if self.position.stage < len(self.config.stages):
            optimizer = self._start_stage(self.config.stages[self.position.stage])
            if state["optimizer"] is not None:
                optimizer.load_state_dict(state["optimizer"])
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
                raise ConfigError(
                    f"stage {stage.name!r} uses objective(s) {missing} that a {self.model.config.mode} "
                    f"model of this config does not support{hint}; supported: {supported}"
                )
        needs_fmri = any(
            o in ("spatial", "temporal", "context", "perceiver") for s in self.config.stages for o in s.objectives
        )
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
        """Windows (B, R, T) and their subjects' connectomes (B, R, R) on the device; None when absent."""
        fmri = sc = None
        if self.data.fmri is not None:
            fmri = torch.as_tensor(self.data.fmri[index], dtype=torch.float32, device=self.device)
        if self.data.sc is not None:
            sc = torch.as_tensor(self.data.sc[self.data.subject[index]], dtype=torch.float32, device=self.device)
        return fmri, sc

    def _autocast_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or self.config.precision == "fp32":
            return None
        if self.config.precision == "fp16":
            return torch.float16
        if self.config.precision == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def _autocast(self) -> AbstractContextManager[Any]:
        dtype = self._autocast_dtype()
        if dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=dtype)
