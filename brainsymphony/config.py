"""``BrainSymphonyConfig``: every hyper-parameter of the model, serialisable to JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from brainsymphony.errors import ConfigError

Mode = Literal["functional", "structural", "multimodal"]
PositionalEncoding = Literal["learnable", "brain_gradient"]
NodeEncoding = Literal["learnable", "laplacian"]
AttentionType = Literal["first_hop", "multi_hop", "diffusion"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("functional", "structural", "multimodal"),
    "positional_encoding": ("learnable", "brain_gradient"),
    "node_encoding": ("learnable", "laplacian"),
    "attention_type": ("first_hop", "multi_hop", "diffusion"),
}


@dataclass(frozen=True, kw_only=True)
class BrainSymphonyConfig:
    """Hyper-parameters of BrainSymphony (docs/model.md); the defaults are the published model.

    Sizes
    -----
    n_regions : int
        R, regions per sample (450 published).
    n_timepoints : int
        T, time points per window (200 published); baked into the spatial embedding and the
        reconstruction head.
    width : int
        D, token width of every stream (128).
    max_regions : int
        Rows of the spatial stream's learned positional table (500); must be >= ``n_regions``.
    max_timepoints : int
        Rows of the temporal sinusoid (5000); must be >= ``n_timepoints``.

    Streams
    -------
    spatial_depth, spatial_heads, temporal_depth, temporal_heads : int
        Pre-norm transformer blocks and heads of the spatial and temporal streams.
    mlp_width : int
        Hidden width of the MLP of every pre-norm block (512).
    dropout : float
        Dropout probability of residual branches (0.1; inactive in eval mode).
    layer_norm_eps : float
        Epsilon of every LayerNorm (1e-5).
    positional_encoding : {"learnable", "brain_gradient"}
        Spatial positional encoding; ``brain_gradient`` needs ``gradient_dim``.
    gradient_dim : int or None
        G, number of gradient components per region for ``brain_gradient``.
    mask_tokens : bool
        Build the learned mask embeddings of the spatial and temporal streams (pretraining only;
        absent from the published weights).

    Context path and Perceiver
    --------------------------
    context_channels : int
        Output channels of the 1-D convolution (64).
    context_kernel : int
        Kernel length of the convolution (5, odd; padding keeps T).
    context_decoder_widths : tuple of int
        Hidden widths of the pretraining decoder (32, 8).
    perceiver_token_width : int
        Width of each of the three token projections before concatenation (64).
    perceiver_heads : int
        Heads of the Perceiver cross-attention and latent blocks (2).
    perceiver_blocks : int
        Latent self-attention blocks after the cross-attention (1 published).

    Structural stream
    -----------------
    structural_depth, structural_heads : int
        Post-norm signed graph transformer layers and heads (6, 4).
    structural_ffn_width : int
        Hidden width of the structural feed-forward network (512).
    node_encoding : {"learnable", "laplacian"}
        Node positional encoding of the structural stream.
    laplacian_dim : int
        Eigenvectors used by the Laplacian node encoding (30).
    attention_type : {"first_hop", "multi_hop", "diffusion"}
        How the connectome weights the signed attention scores.
    max_hops : int
        Powers of the connectome averaged by ``multi_hop`` (2).
    diffusion_steps : int
        Terms of the diffusion series (10).
    diffusion_theta : float
        Decay of the diffusion series (0.1).
    edge_head_widths : tuple of int
        Hidden widths of the edge-prediction head (512, 128).

    mode : {"functional", "structural", "multimodal"}
        Which streams are built.
    """

    mode: Mode = "multimodal"
    n_regions: int = 450
    n_timepoints: int = 200
    width: int = 128
    max_regions: int = 500
    max_timepoints: int = 5000
    spatial_depth: int = 6
    spatial_heads: int = 4
    temporal_depth: int = 6
    temporal_heads: int = 4
    mlp_width: int = 512
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    positional_encoding: PositionalEncoding = "learnable"
    gradient_dim: int | None = None
    mask_tokens: bool = False
    context_channels: int = 64
    context_kernel: int = 5
    context_decoder_widths: tuple[int, ...] = field(default=(32, 8))
    perceiver_token_width: int = 64
    perceiver_heads: int = 2
    perceiver_blocks: int = 1
    structural_depth: int = 6
    structural_heads: int = 4
    structural_ffn_width: int = 512
    node_encoding: NodeEncoding = "learnable"
    laplacian_dim: int = 30
    attention_type: AttentionType = "first_hop"
    max_hops: int = 2
    diffusion_steps: int = 10
    diffusion_theta: float = 0.1
    edge_head_widths: tuple[int, ...] = field(default=(512, 128))

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"config field {name}={getattr(self, name)!r}; choose one of {choices}")
        for name in ("context_decoder_widths", "edge_head_widths"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        positive = [f.name for f in dataclasses.fields(self) if f.type in ("int", int)]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"config field {name}={getattr(self, name)} must be >= 1")
        for heads_field in ("spatial_heads", "temporal_heads", "perceiver_heads", "structural_heads"):
            if self.width % getattr(self, heads_field):
                raise ConfigError(f"width={self.width} is not divisible by {heads_field}={getattr(self, heads_field)}")
        if self.max_regions < self.n_regions:
            raise ConfigError(f"max_regions={self.max_regions} is smaller than n_regions={self.n_regions}")
        if self.max_timepoints < self.n_timepoints:
            raise ConfigError(f"max_timepoints={self.max_timepoints} is smaller than n_timepoints={self.n_timepoints}")
        if self.context_kernel % 2 == 0:
            raise ConfigError(f"context_kernel={self.context_kernel} must be odd so the series keeps T frames")
        if self.positional_encoding == "brain_gradient" and not self.gradient_dim:
            raise ConfigError("positional_encoding='brain_gradient' needs gradient_dim (components per region)")
        if self.node_encoding == "laplacian" and self.laplacian_dim > self.n_regions:
            raise ConfigError(f"laplacian_dim={self.laplacian_dim} exceeds n_regions={self.n_regions}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")

    @property
    def has_functional(self) -> bool:
        """Whether the spatial, temporal, context and Perceiver modules are built."""
        return self.mode in ("functional", "multimodal")

    @property
    def has_structural(self) -> bool:
        """Whether the signed graph transformer is built."""
        return self.mode in ("structural", "multimodal")

    @classmethod
    def published(cls, **overrides: Any) -> BrainSymphonyConfig:
        """Configuration of the authors' published weights (multimodal unless overridden)."""
        return cls(**overrides)

    def replace(self, **changes: Any) -> BrainSymphonyConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary of every field."""
        data = dataclasses.asdict(self)
        for name in ("context_decoder_widths", "edge_head_widths"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BrainSymphonyConfig:
        """Inverse of :meth:`to_dict`; unknown fields are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (sorted keys, indented)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BrainSymphonyConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
