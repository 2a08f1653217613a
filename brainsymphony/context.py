"""Context path: local temporal features of each region's series by a 1-D convolution.

See docs/model.md, "Context path (1-D conv + Perceiver)".
"""

from __future__ import annotations

import torch
from torch import nn

from brainsymphony.config import BrainSymphonyConfig


class ContextPath(nn.Module):
    """Conv1d(1 -> C, kernel K, padding K//2) per region, a scalar mask token and a pretraining decoder.

    Parameters
    ----------
    config : BrainSymphonyConfig
        Uses ``context_channels`` (C), ``context_kernel`` (K) and ``context_decoder_widths``.
    """

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        channels = config.context_channels
        self.mask_token = nn.Parameter(torch.zeros(1))
        self.conv1d = nn.Conv1d(1, channels, config.context_kernel, padding=config.context_kernel // 2)
        layers: list[nn.Module] = []
        widths = (channels, *config.context_decoder_widths)
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.GELU()]
        layers.append(nn.Linear(widths[-1], 1))
        self.decoder = nn.Sequential(*layers)

    def masked_series(self, fmri: torch.Tensor, entry_mask: torch.Tensor | None) -> torch.Tensor:
        """Replace masked (region, time) entries by the learned scalar mask token.

        Parameters
        ----------
        fmri : Tensor, shape (B, R, T)
        entry_mask : BoolTensor, shape (B, R, T), or None

        Returns
        -------
        Tensor, shape (B, R, T)
        """
        if entry_mask is None:
            return fmri
        return torch.where(entry_mask, self.mask_token.to(fmri.dtype), fmri)

    def features(self, series: torch.Tensor) -> torch.Tensor:
        """Convolve each region's (already masked) series.

        Parameters
        ----------
        series : Tensor, shape (B, R, T)

        Returns
        -------
        Tensor, shape (B, R, T, C)
        """
        batch, regions, frames = series.shape
        # (B, R, T) -> (B*R, 1, T) -> (B*R, C, T) -> (B, R, T, C)
        out = self.conv1d(series.reshape(batch * regions, 1, frames))
        return out.view(batch, regions, -1, frames).transpose(2, 3)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Pretraining decoder: per-(region, time) features (B, R, T, C) -> predicted signal (B, R, T)."""
        return self.decoder(features).squeeze(-1)
