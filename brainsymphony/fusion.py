"""Fusion gate: per region and channel mixing of functional and structural embeddings (docs/model.md, "Fusion gate")."""

from __future__ import annotations

import torch
from torch import nn


class FusionGate(nn.Module):
    """g = sigmoid(Linear(2D -> D)([f ; s])); fused = g * f + (1 - g) * s.

    Parameters
    ----------
    width : int
        D.
    """

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * width, width)

    def neutral_(self) -> FusionGate:
        """Set weight and bias to 0 so g = 0.5 (fused = mean of the streams); returns self."""
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.bias.zero_()
        return self

    def forward(self, functional: torch.Tensor, structural: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse.

        Parameters
        ----------
        functional, structural : Tensor, shape (B, R, D)

        Returns
        -------
        fused : Tensor, shape (B, R, D)
        gates : Tensor, shape (B, R, D)
            g, the weight of the functional embedding.
        """
        gates = torch.sigmoid(self.proj(torch.cat([functional, structural], dim=-1)))
        return gates * functional + (1.0 - gates) * structural, gates
