"""Signed graph transformer: the structural stream over rows of the signed connectome.

See docs/model.md, "Signed graph transformer".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from brainsymphony.config import BrainSymphonyConfig

#: Constant of the published denominator, sum_k exp(|S_ik|) + 1e-10.
_DENOMINATOR_FLOOR = 1e-10


def signed_softmax(scores: torch.Tensor, *, reuse: bool = False) -> torch.Tensor:
    """A_ij = sign(S_ij) exp(|S_ij|) / (sum_k exp(|S_ik|) + 1e-10), computed stably.

    The row maximum m of |S| is subtracted inside the exponentials and the floor scaled by exp(-m), which
    leaves the formula unchanged wherever it does not overflow. After the shift the denominator is at least 1,
    so the floor is below float32's resolution: in float32 (and lower) the result is the row softmax of |S|
    times sign(S), one fused kernel; float64 keeps the floor.

    Parameters
    ----------
    scores : Tensor, shape (..., N, N)
    reuse : bool
        Without autograd, let ``scores`` be overwritten (saves a copy).

    Returns
    -------
    Tensor, shape (..., N, N)
        Signed weights; their absolute values sum to slightly less than 1 per row.
    """
    if scores.dtype != torch.float64:
        weights = torch.softmax(scores.abs(), dim=-1)
        if reuse and not (torch.is_grad_enabled() and scores.requires_grad):
            return weights.mul_(scores.sign_())
        return weights * torch.sign(scores)
    magnitude = scores.abs()
    row_max = magnitude.amax(dim=-1, keepdim=True)
    exponent = torch.exp(magnitude - row_max)
    denominators = exponent.sum(dim=-1, keepdim=True) + _DENOMINATOR_FLOOR * torch.exp(-row_max)
    return torch.sign(scores) * exponent / denominators


def attention_weightings(sc: torch.Tensor, config: BrainSymphonyConfig) -> list[torch.Tensor]:
    """Connectome weightings W of the signed scores, one per averaged attention.

    Parameters
    ----------
    sc : Tensor, shape (B, R, R)
    config : BrainSymphonyConfig
        ``attention_type``: ``first_hop`` -> [sc]; ``multi_hop`` -> [sc, sc^2 / ||sc^2||_F, ...] up to
        ``max_hops``; ``diffusion`` -> [sum_k theta^k Ahat^k], Ahat = D^-1/2 sc D^-1/2, D row sums of |sc|
        (rows with D = 0 contribute 0).

    Returns
    -------
    list of Tensor, shape (B, R, R)
    """
    if config.attention_type == "first_hop":
        return [sc]
    if config.attention_type == "multi_hop":
        weightings, power = [sc], sc
        for _ in range(1, config.max_hops):
            power = power @ sc
            norm = torch.linalg.matrix_norm(power, ord="fro", keepdim=True).clamp_min(1e-12)
            weightings.append(power / norm)
            power = power / norm
        return weightings
    degree = sc.abs().sum(dim=-1)
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(1e-30).rsqrt(), torch.zeros_like(degree))
    normalised = inv_sqrt[:, :, None] * sc * inv_sqrt[:, None, :]
    term = torch.eye(sc.shape[-1], dtype=sc.dtype, device=sc.device).expand_as(sc)
    total = term.clone()
    for _ in range(1, config.diffusion_steps):
        term = config.diffusion_theta * (term @ normalised)
        total = total + term
    return [total]


def stacked_weighting(weightings: list[torch.Tensor], config: BrainSymphonyConfig) -> torch.Tensor:
    """The weightings as every layer multiplies its scores: stacked, over sqrt(d_h), (B, W, 1, R, R)."""
    head_width = config.width // config.structural_heads
    return (torch.stack(weightings, dim=1) / math.sqrt(head_width)).unsqueeze(2)


def laplacian_encoding(sc: torch.Tensor, dim: int) -> torch.Tensor:
    """Eigenvectors of the normalised Laplacian of the rows' angular affinity.

    Affinity A = 1 - arccos(cos(sc_i, sc_j)) / pi, L = I - D^-1/2 A D^-1/2; the ``dim`` eigenvectors with
    the largest eigenvalues (eigenvector signs are those of ``torch.linalg.eigh``).

    Parameters
    ----------
    sc : Tensor, shape (B, R, R)
    dim : int

    Returns
    -------
    Tensor, shape (B, R, dim)
    """
    rows = sc.double()
    norms = rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cosine = ((rows / norms) @ (rows / norms).transpose(1, 2)).clamp(-1.0, 1.0)
    affinity = 1.0 - torch.arccos(cosine) / math.pi
    inv_sqrt = affinity.sum(-1).clamp_min(1e-12).rsqrt()
    identity = torch.eye(sc.shape[-1], dtype=rows.dtype, device=sc.device)
    laplacian = identity - inv_sqrt[:, :, None] * affinity * inv_sqrt[:, None, :]
    _, vectors = torch.linalg.eigh(laplacian)  # ascending eigenvalues
    return vectors[..., -dim:].to(sc.dtype)


class SignedAttentionLayer(nn.Module):
    """Post-norm layer: x = LN1(x + O(A V)); x = LN2(x + Drop(FFN(x))), A the signed attention.

    Parameters
    ----------
    width : int
    heads : int
    ffn_width : int
    dropout : float
    eps : float
    """

    def __init__(self, *, width: int, heads: int, ffn_width: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(width, width)
        self.k_linear = nn.Linear(width, width)
        self.v_linear = nn.Linear(width, width)
        self.out_linear = nn.Linear(width, width)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(width, ffn_width), nn.ReLU(), nn.Linear(ffn_width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, weighting: torch.Tensor, *, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply the layer.

        Parameters
        ----------
        x : Tensor, shape (B, R, D)
        weighting : Tensor, shape (B, W, 1, R, R)
            The W connectome weightings stacked and divided by sqrt(d_h) (:func:`stacked_weighting`); the
            signed attention is averaged over them.
        need_weights : bool

        Returns
        -------
        x : Tensor, shape (B, R, D)
        attention : Tensor, shape (B, H, R, R), or None
        """
        batch, regions, width = x.shape
        head_width = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, R, D) -> (B, H, R, d_h)
            return t.view(batch, regions, self.heads, head_width).transpose(1, 2)

        q, k, v = split(self.q_linear(x)), split(self.k_linear(x)), split(self.v_linear(x))
        scores = (q @ k.transpose(-1, -2)).unsqueeze(1) * weighting  # every weighting at once, (B, W, H, R, R)
        weights = signed_softmax(scores, reuse=True)
        mixed = (weights @ v.unsqueeze(1)).mean(dim=1)  # (B, W, H, R, d_h) -> (B, H, R, d_h)
        mixed = mixed.transpose(1, 2).reshape(batch, regions, width)
        x = self.layer_norm1(x + self.out_linear(mixed))
        x = self.layer_norm2(x + self.dropout(self.ffn(x)))
        if not need_weights:
            return x, None
        return x, weights.mean(dim=1)


@dataclass
class StructuralOutput:
    """Outputs of :class:`SignedGraphTransformer`: ``embeddings`` (B, R, D), maps (B, H, R, R) per layer."""

    embeddings: torch.Tensor
    attention: list[torch.Tensor] | None


class SignedGraphTransformer(nn.Module):
    """Structural stream: node features are connectome rows; signed attention weighted by the connectome.

    The published module stores both node encodings (``pos_embed`` and ``positional_proj``); both are
    built so checkpoints load, and ``config.node_encoding`` picks the one used.

    Parameters
    ----------
    config : BrainSymphonyConfig
    """

    def __init__(self, config: BrainSymphonyConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.pos_embed = nn.Parameter(torch.randn(config.n_regions, width) * 0.02)
        self.input_proj = nn.Linear(config.n_regions, width)
        self.positional_proj = nn.Linear(config.laplacian_dim, width)
        self.layers = nn.ModuleList(
            SignedAttentionLayer(
                width=width,
                heads=config.structural_heads,
                ffn_width=config.structural_ffn_width,
                dropout=config.dropout,
                eps=config.layer_norm_eps,
            )
            for _ in range(config.structural_depth)
        )
        widths = (2 * width, *config.edge_head_widths)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], 1))
        self.edge_weight_predictor = nn.Sequential(*layers)

    def forward(
        self, sc: torch.Tensor, *, edge_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> StructuralOutput:
        """Embed regions from the signed connectome.

        Parameters
        ----------
        sc : Tensor, shape (B, R, R)
            Signed structural connectome.
        edge_mask : BoolTensor, shape (B, R, R), optional
            True for edges hidden from the model (pretraining): they are set to 0 in the node features and
            in every attention weighting, i.e. they look exactly like absent edges.
        need_weights : bool
            Return the signed attention of every layer.

        Returns
        -------
        StructuralOutput
        """
        if edge_mask is not None:
            sc = sc.masked_fill(edge_mask, 0.0)
        h = self.input_proj(sc)  # (B, R, R) -> (B, R, D)
        if self.config.node_encoding == "learnable":
            h = h + self.pos_embed[: sc.shape[1]]
        else:
            h = h + self.positional_proj(laplacian_encoding(sc, self.config.laplacian_dim))
        weighting = stacked_weighting(attention_weightings(sc, self.config), self.config)
        maps: list[torch.Tensor] | None = [] if need_weights else None
        for layer in self.layers:
            h, attention = layer(h, weighting, need_weights=need_weights)
            if maps is not None and attention is not None:
                maps.append(attention)
        return StructuralOutput(embeddings=h, attention=maps)

    def edge_logits(self, embeddings: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pretraining edge head on selected pairs.

        Parameters
        ----------
        embeddings : Tensor, shape (B, R, D)
        source, target : LongTensor, shape (B, P)
            Region indices of the P pairs per sample.

        Returns
        -------
        Tensor, shape (B, P)
            Predicted edge weight of [h_source ; h_target].
        """
        index = source.unsqueeze(-1).expand(-1, -1, embeddings.shape[-1])
        left = torch.gather(embeddings, 1, index)
        right = torch.gather(embeddings, 1, target.unsqueeze(-1).expand(-1, -1, embeddings.shape[-1]))
        return self.edge_weight_predictor(torch.cat([left, right], dim=-1)).squeeze(-1)
