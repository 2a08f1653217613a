"""Tiny, deliberately odd-sized BrainSymphony configurations (R=7, T=11, D=16, H=2)."""

from __future__ import annotations

import torch

from brainsymphony import BrainSymphonyConfig

REGIONS, FRAMES = 7, 11


def tiny_config(**changes) -> BrainSymphonyConfig:
    """R=7, T=11, D=16, two heads everywhere, two layers per stream, small widths."""
    base = dict(
        n_regions=REGIONS,
        n_timepoints=FRAMES,
        width=16,
        max_regions=9,
        max_timepoints=23,
        spatial_depth=2,
        spatial_heads=2,
        temporal_depth=2,
        temporal_heads=2,
        mlp_width=24,
        context_channels=6,
        context_kernel=5,
        context_decoder_widths=(4, 3),
        perceiver_token_width=5,
        perceiver_heads=2,
        perceiver_blocks=1,
        structural_depth=2,
        structural_heads=2,
        structural_ffn_width=20,
        laplacian_dim=3,
        edge_head_widths=(12, 5),
    )
    base.update(changes)
    return BrainSymphonyConfig(**base)


def randomise_(model: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """Give every parameter random values (so zero-initialised biases and gates are exercised)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * scale
            parameter.copy_(noise + 1.0 if name.endswith("norm1.weight") or "ln.weight" in name else noise)
    return model
