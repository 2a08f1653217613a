"""Spatial stream: one token per region, embedded from the region's whole series.

See docs/model.md, "Spatial and temporal streams".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brainsymphony.attention import TransformerBlock
from brainsymphony.config import BrainSymphonyConfig


class RegionPositionalEncoding(nn.Module):
    """Positional term of the region tokens.

    ``learnable`` adds rows of a learned table ``pe`` (1, max_regions, D); the published module also
    stores ``alpha`` and ``ln`` unused, kept so checkpoints load. ``brain_gradient`` computes
    h = LN(h + alpha * Linear(G -> D)(gradients)) with alpha starting at 0.1.
    """

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        self.kind = config.positional_encoding
        self.pe = nn.Parameter(torch.randn(1, config.max_regions, config.width) * 0.02)
        self.alpha = nn.Parameter(torch.tensor(0.1))
        self.ln = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        gradient_dim = config.gradient_dim if self.kind == "brain_gradient" else None  # set, the config checks
        self.gradient_proj = nn.Linear(gradient_dim, config.width) if gradient_dim is not None else None

    def forward(self, h: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the positional term.

        Parameters
        ----------
        h : Tensor, shape (B, R, D)
            Embedded region tokens.
        gradients : Tensor, shape (B, R, G) or (R, G), or None
            Brain gradients; required for ``brain_gradient``.

        Returns
        -------
        h : Tensor, shape (B, R, D)
        positional : Tensor, shape (B, R, D)
            The positional term itself, re-used by the Perceiver queries.
        """
        batch, regions, _ = h.shape
        if self.gradient_proj is None:
            positional = self.pe[:, :regions].expand(batch, -1, -1)
            return h + positional, positional
        if gradients is None:
            raise ValueError("this model uses brain-gradient positional encoding; pass gradients=(B, R, G)")
        if gradients.dim() == 2:
            gradients = gradients.unsqueeze(0).expand(batch, -1, -1)
        positional = self.alpha * self.gradient_proj(gradients.to(h.dtype))
        return self.ln(h + positional), positional


@dataclass
class SpatialOutput:
    """Outputs of :class:`SpatialStream`: ``embeddings`` and ``positional`` (B, R, D), per-layer maps."""

    embeddings: torch.Tensor
    positional: torch.Tensor
    attention: list[torch.Tensor] | None


class SpatialStream(nn.Module):
    """Region tokens: Linear(T -> D) of each region's series, positional term, pre-norm blocks.

    Parameters
    ----------
    config : BrainSymphonyConfig
    """

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        self.embedding_layer = nn.Linear(config.n_timepoints, config.width)
        self.pos_enc = RegionPositionalEncoding(config)
        self.mask_token = nn.Parameter(torch.zeros(config.width)) if config.mask_tokens else None
        self.layers = nn.ModuleList(
            TransformerBlock(
                width=config.width,
                heads=config.spatial_heads,
                mlp_width=config.mlp_width,
                dropout=config.dropout,
                eps=config.layer_norm_eps,
            )
            for _ in range(config.spatial_depth)
        )

    def forward(
        self,
        fmri: torch.Tensor,
        *,
        gradients: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> SpatialOutput:
        """Embed regions.

        Parameters
        ----------
        fmri : Tensor, shape (B, R, T)
            Scaled parcel series.
        gradients : Tensor, shape (B, R, G) or (R, G), optional
            Only for the ``brain_gradient`` encoding.
        region_mask : BoolTensor, shape (B, R), optional
            True where a region's token is replaced by the learned mask embedding (pretraining; needs
            ``mask_tokens=True``).
        need_weights : bool
            Return the attention of every layer.

        Returns
        -------
        SpatialOutput
            embeddings (B, R, D), positional (B, R, D), attention: list of (B, H, R, R) per layer or None.
        """
        h = self.embedding_layer(fmri)  # (B, R, T) -> (B, R, D)
        h = _apply_mask_token(h, region_mask, self.mask_token, what="region_mask")
        h, positional = self.pos_enc(h, gradients)
        maps: list[torch.Tensor] | None = [] if need_weights else None
        for layer in self.layers:
            h, weights = layer(h, need_weights=need_weights)
            if maps is not None and weights is not None:
                maps.append(weights)
        return SpatialOutput(embeddings=h, positional=positional, attention=maps)


def _apply_mask_token(
    h: torch.Tensor, mask: torch.Tensor | None, token: torch.Tensor | None, *, what: str
) -> torch.Tensor:
    """Replace masked tokens (B, N) of h (B, N, D) by a learned (D,) embedding."""
    if mask is None:
        return h
    if token is None:
        raise ValueError(f"{what} given but the model was built without mask tokens; set mask_tokens=True")
    return torch.where(mask.unsqueeze(-1), token.to(h.dtype), h)
