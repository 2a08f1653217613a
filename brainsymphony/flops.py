"""Analytic FLOP count of one forward pass as the formulas of docs/model.md are written (2 FLOPs per multiply-add).

This is the *reference* count that speed goals are stated against (docs/model.md, "Parameter counts and reference
cost": ~32.6 GFLOP per subject for the published multimodal configuration); the fast Perceiver needs far fewer.
"""

from __future__ import annotations

from brainsymphony.config import BrainSymphonyConfig

#: Reference cost of one published multimodal forward pass, FLOPs per subject (docs/model.md, "Parameter counts
#: and reference cost").
PUBLISHED_REFERENCE_FLOPS = 32.6e9


def _block(tokens: int, width: int, mlp: int) -> float:
    """Pre-norm block: QKV, scores, weighted sum, output projection, MLP."""
    return 2.0 * (
        tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width + 2 * tokens * width * mlp
    )


def reference_flops(config: BrainSymphonyConfig) -> dict[str, float]:
    """FLOPs per subject of each part and the total.

    Parameters
    ----------
    config : BrainSymphonyConfig

    Returns
    -------
    dict
        ``spatial``, ``temporal``, ``context``, ``perceiver`` (with ``perceiver_tokens``, ``perceiver_kv``,
        ``perceiver_attention``, ``perceiver_rest``), ``structural`` and ``total``, in FLOPs.
    """
    r, t, d, m = config.n_regions, config.n_timepoints, config.width, config.mlp_width
    p, c = config.perceiver_token_width, config.context_channels
    parts: dict[str, float] = {}
    if config.has_functional:
        parts["spatial"] = 2.0 * r * t * d + config.spatial_depth * _block(r, d, m)
        parts["temporal"] = 2.0 * t * r * d + config.temporal_depth * _block(t, d, m)
        parts["context"] = 2.0 * r * t * c * config.context_kernel
        parts["perceiver_tokens"] = 2.0 * (r * d * p + t * d * p + r * t * p * d)
        parts["perceiver_kv"] = 2.0 * 2 * r * t * d * d
        parts["perceiver_attention"] = 2.0 * 2 * r * (r * t) * d
        parts["perceiver_rest"] = 2.0 * (
            2 * r * d * d + r * d * 2 * d + r * 2 * d * t
        ) + config.perceiver_blocks * _block(r, d, m)
        parts["perceiver"] = sum(parts[k] for k in ("perceiver_tokens", "perceiver_kv", "perceiver_attention"))
        parts["perceiver"] += parts["perceiver_rest"]
    if config.has_structural:
        ffn = config.structural_ffn_width
        layer = 2.0 * (4 * r * d * d + 2 * r * r * d + 2 * r * d * ffn)
        parts["structural"] = 2.0 * r * r * d + config.structural_depth * layer
    parts["total"] = sum(parts.get(k, 0.0) for k in ("spatial", "temporal", "context", "perceiver", "structural"))
    return parts


def exponentials(config: BrainSymphonyConfig) -> dict[str, float]:
    """Exponentials per subject in the softmaxes of one forward pass, which no exact rewrite removes.

    The Perceiver's cross-attention scores every one of its R * heads queries against all R * T tokens, so it
    needs R^2 T heads exponentials however the scores are formed (81 M for the published configuration);
    the self-attention blocks need layers * heads * tokens^2.

    Parameters
    ----------
    config : BrainSymphonyConfig

    Returns
    -------
    dict
        ``spatial``, ``temporal``, ``perceiver``, ``structural`` and ``total``.
    """
    r, t = config.n_regions, config.n_timepoints
    parts: dict[str, float] = {}
    if config.has_functional:
        parts["spatial"] = float(config.spatial_depth * config.spatial_heads * r * r)
        parts["temporal"] = float(config.temporal_depth * config.temporal_heads * t * t)
        latent = config.perceiver_blocks * config.perceiver_heads * r * r
        parts["perceiver"] = float(config.perceiver_heads * r * r * t + latent)
    if config.has_structural:
        parts["structural"] = float(config.structural_depth * config.structural_heads * r * r)
    parts["total"] = sum(parts.values())
    return parts


def unavoidable_matmul_flops(config: BrainSymphonyConfig) -> float:
    """Reference FLOPs per subject that stay matrix products in the factorised model: every part but the
    Perceiver's tokens, keys, values and attention scores, which the exact rewrite replaces."""
    parts = reference_flops(config)
    return parts["total"] - sum(parts.get(k, 0.0) for k in ("perceiver_tokens", "perceiver_kv", "perceiver_attention"))
