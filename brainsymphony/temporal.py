"""Temporal stream: one token per time point, embedded from the R-vector of that frame.

See docs/model.md, "Spatial and temporal streams".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from brainsymphony.attention import TransformerBlock
from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.spatial import _apply_mask_token


def sinusoid_table(positions: int, width: int) -> torch.Tensor:
    """Fixed sinusoidal encoding: sin on even, cos on odd channels, base 10000.

    Parameters
    ----------
    positions : int
        Number of positions P.
    width : int
        D, channels (even).

    Returns
    -------
    Tensor, shape (1, P, D)
    """
    position = torch.arange(positions, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(positions, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table.unsqueeze(0)


class TimePositionalEncoding(nn.Module):
    """Adds the fixed sinusoid ``pe`` (1, max_timepoints, D), a persistent buffer as in the release."""

    pe: torch.Tensor

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(config.max_timepoints, config.width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, T, D) -> h + pe[:, :T] (B, T, D)."""
        return h + self.pe[:, : h.shape[1]].to(h.dtype)


@dataclass
class TemporalOutput:
    """Outputs of :class:`TemporalStream`: ``embeddings`` (B, T, D) and per-layer maps (B, H, T, T)."""

    embeddings: torch.Tensor
    attention: list[torch.Tensor] | None


class TemporalStream(nn.Module):
    """Time tokens: Linear(R -> D) of each frame, sinusoid, pre-norm blocks.

    Parameters
    ----------
    config : BrainSymphonyConfig
    """

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        self.embedding_layer = nn.Linear(config.n_regions, config.width)
        self.pos_enc = TimePositionalEncoding(config)
        self.mask_token = nn.Parameter(torch.zeros(config.width)) if config.mask_tokens else None
        self.layers = nn.ModuleList(
            TransformerBlock(
                width=config.width,
                heads=config.temporal_heads,
                mlp_width=config.mlp_width,
                dropout=config.dropout,
                eps=config.layer_norm_eps,
            )
            for _ in range(config.temporal_depth)
        )

    def forward(
        self, fmri: torch.Tensor, *, time_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> TemporalOutput:
        """Embed time points.

        Parameters
        ----------
        fmri : Tensor, shape (B, R, T)
        time_mask : BoolTensor, shape (B, T), optional
            True where a frame's token is replaced by the learned mask embedding (pretraining).
        need_weights : bool
            Return the attention of every layer.

        Returns
        -------
        TemporalOutput
            embeddings (B, T, D); attention: list of (B, H, T, T) per layer or None.
        """
        h = self.embedding_layer(fmri.transpose(1, 2))  # (B, R, T) -> (B, T, R) -> (B, T, D)
        h = _apply_mask_token(h, time_mask, self.mask_token, what="time_mask")
        h = self.pos_enc(h)
        maps: list[torch.Tensor] | None = [] if need_weights else None
        for layer in self.layers:
            h, weights = layer(h, need_weights=need_weights)
            if maps is not None and weights is not None:
                maps.append(weights)
        return TemporalOutput(embeddings=h, attention=maps)
