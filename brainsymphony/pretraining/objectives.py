"""Masked pretraining objectives: random masks, the pretraining decoders and the masked losses.

Every objective is a mean squared error on the masked entries only (docs/model.md, "Pretraining objectives"):

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

Masks are drawn on the CPU from a :func:`seeded_generator`, so they depend only on the seed and a counter.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.context import ContextPath
from brainsymphony.errors import ConfigError
from brainsymphony.model import BrainSymphony
from brainsymphony.perceiver import Perceiver
from brainsymphony.pretraining.config import MaskingRatios
from brainsymphony.spatial import SpatialStream
from brainsymphony.temporal import TemporalStream


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


class MaskedObjectives:
    """The masked losses of one model and its pretraining decoders.

    Parameters
    ----------
    model : BrainSymphony
    decoders : PretrainingDecoders
    masking : MaskingRatios
    """

    def __init__(self, model: BrainSymphony, decoders: PretrainingDecoders, masking: MaskingRatios) -> None:
        self.model, self.decoders, self.masking = model, decoders, masking

    def loss(
        self, name: str, fmri: torch.Tensor | None, sc: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """Masked MSE of one objective on one batch, masks drawn from ``generator``.

        Parameters
        ----------
        name : str
            One of :data:`~brainsymphony.pretraining.OBJECTIVES`.
        fmri : Tensor, shape (B, R, T), or None
            Needed by the functional objectives.
        sc : Tensor, shape (B, R, R), or None
            Needed by ``structural``.
        generator : torch.Generator
            CPU generator of the masks.

        Returns
        -------
        Tensor, shape ()
            float32.
        """
        ratios = self.masking
        if name == "structural":
            sc = _required(sc, "sc", name)
            source, target = random_pairs(sc.shape[0], sc.shape[1], ratios.edges, generator)
            return self.edge_loss(sc, source.to(sc.device), target.to(sc.device), scored=ratios.scored_edges)
        fmri = _required(fmri, "fmri", name)
        spatial, temporal, context, _ = _functional(self.model)
        if name == "spatial":
            mask = random_mask(fmri.shape[:2], ratios.regions, generator).to(fmri.device)  # (B, R)
            embeddings = spatial(fmri, region_mask=mask).embeddings
            return masked_mse(self.decoders.spatial(embeddings).float(), fmri, mask.unsqueeze(-1))
        if name == "temporal":
            mask = random_mask((fmri.shape[0], fmri.shape[2]), ratios.timepoints, generator).to(fmri.device)
            embeddings = temporal(fmri, time_mask=mask).embeddings  # (B, T, D)
            predicted = self.decoders.temporal(embeddings).transpose(1, 2).float()  # (B, T, R) -> (B, R, T)
            return masked_mse(predicted, fmri, mask.unsqueeze(1))
        if name == "context":
            mask = random_mask(fmri.shape, ratios.entries, generator).to(fmri.device)  # (B, R, T)
            series = context.masked_series(fmri, mask)
            return masked_mse(context.decode(context.features(series)).float(), fmri, mask)
        if name == "perceiver":
            regions = random_mask(fmri.shape[:2], ratios.regions, generator).to(fmri.device)  # (B, R)
            return masked_mse(self.reconstruction(fmri, regions).float(), fmri, regions.unsqueeze(-1))
        raise ConfigError(f"unknown objective {name!r}")

    def reconstruction(self, fmri: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
        """Perceiver reconstruction with the masked regions' series replaced by the context mask token.

        Parameters
        ----------
        fmri : Tensor, shape (B, R, T)
        region_mask : BoolTensor, shape (B, R)

        Returns
        -------
        Tensor, shape (B, R, T)
        """
        spatial, temporal, context, perceiver = _functional(self.model)
        series = context.masked_series(fmri, region_mask.unsqueeze(-1).expand_as(fmri))
        region_out = spatial(series)
        return perceiver(
            region_out.embeddings, temporal(series).embeddings, series, context.conv1d, region_out.positional
        ).reconstruction

    def edge_loss(self, sc: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *, scored: int) -> torch.Tensor:
        """Hide every given pair from the graph transformer; score the first ``scored`` of them.

        Parameters
        ----------
        sc : Tensor, shape (B, R, R)
        source, target : LongTensor, shape (B, P)
            Hidden pairs (mirrored, so (i, j) and (j, i) both disappear).
        scored : int
            Pairs per sample scored by the edge head.

        Returns
        -------
        Tensor, shape ()
            MSE of the predicted edge values.
        """
        structural = self.model.structural
        if structural is None:
            raise ConfigError(f"a {self.model.config.mode} model has no structural stream")
        batch, pairs = source.shape
        edge_mask = torch.zeros_like(sc, dtype=torch.bool)
        rows = torch.arange(batch, device=sc.device).unsqueeze(-1).expand(-1, pairs)
        edge_mask[rows, source, target] = True
        edge_mask[rows, target, source] = True
        embeddings = structural(sc, edge_mask=edge_mask).embeddings
        source, target, rows = source[:, :scored], target[:, :scored], rows[:, :scored]
        predicted = structural.edge_logits(embeddings, source, target).float()
        return ((predicted - sc[rows, source, target].float()) ** 2).mean()


def seeded_generator(seed: int, purpose: int, counter: int) -> torch.Generator:
    """A CPU generator determined by (seed, purpose, counter)."""
    state = np.random.SeedSequence([seed, purpose, counter]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def random_mask(shape: tuple[int, ...] | torch.Size, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean CPU mask of ``shape`` with exactly max(1, round(ratio * n)) True entries per leading row."""
    rows, rest = shape[0], int(np.prod(shape[1:]))
    count = max(1, round(ratio * rest))
    order = torch.rand(rows, rest, generator=generator).argsort(dim=1)
    mask = torch.zeros(rows, rest, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(shape)


def random_pairs(
    batch: int, regions: int, ratio: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ratio`` of the R(R-1)/2 region pairs per sample: (source, target) LongTensors (B, P), source < target."""
    upper = torch.triu_indices(regions, regions, offset=1)
    count = max(1, round(ratio * upper.shape[1]))
    chosen = torch.rand(batch, upper.shape[1], generator=generator).argsort(dim=1)[:, :count]
    return upper[0][chosen], upper[1][chosen]


def masked_mse(predicted: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` (broadcast to ``truth``) is True."""
    weight = mask.expand_as(truth).to(predicted.dtype)
    return (((predicted - truth) ** 2) * weight).sum() / weight.sum().clamp_min(1.0)


def _functional(model: BrainSymphony) -> tuple[SpatialStream, TemporalStream, ContextPath, Perceiver]:
    """The functional modules of ``model``; a structural model has none."""
    modules = model.functional_modules()
    if modules is None:
        raise ConfigError(f"a {model.config.mode} model has no functional streams")
    return modules


def _required(value: torch.Tensor | None, what: str, objective: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"the {objective} objective needs {what}, but the batch has none")
    return value
