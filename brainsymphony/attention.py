"""Multi-head self-attention and the pre-norm transformer block shared by the functional streams."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with one bias-free QKV projection and a biased output projection.

    Parameters
    ----------
    width : int
        D, token width.
    heads : int
        H, number of heads; ``width`` must be divisible by it.
    """

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.fc_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, *, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend every token to every token.

        Parameters
        ----------
        x : Tensor, shape (B, N, D)
        need_weights : bool
            Return the attention weights (explicit path); otherwise the fused
            ``scaled_dot_product_attention`` kernel is used and no map is built.

        Returns
        -------
        out : Tensor, shape (B, N, D)
        weights : Tensor, shape (B, H, N, N), or None
            softmax(Q K^T / sqrt(D/H)) per head; rows sum to 1.
        """
        batch, tokens, width = x.shape
        # (B, N, 3D) -> 3 x (B, H, N, D/H)
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if need_weights:
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // self.heads), dim=-1)
            mixed = weights @ v
        else:
            weights = None
            mixed = F.scaled_dot_product_attention(q, k, v)
        # (B, H, N, D/H) -> (B, N, D)
        mixed = mixed.transpose(1, 2).reshape(batch, tokens, width)
        return self.fc_out(mixed), weights


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x))), MLP = Linear-GELU-Linear.

    Parameters
    ----------
    width : int
        D, token width.
    heads : int
        H, attention heads.
    mlp_width : int
        Hidden width of the MLP.
    dropout : float
        Dropout probability on both residual branches.
    eps : float
        LayerNorm epsilon.
    """

    def __init__(self, *, width: int, heads: int, mlp_width: int, dropout: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width=width, heads=heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.GELU(), nn.Linear(mlp_width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply the block.

        Parameters
        ----------
        x : Tensor, shape (B, N, D)
        need_weights : bool
            Also return the attention weights.

        Returns
        -------
        x : Tensor, shape (B, N, D)
        weights : Tensor, shape (B, H, N, N), or None
        """
        attended, weights = self.attn(self.norm1(x), need_weights=need_weights)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.mlp(self.norm2(x)))
        return x, weights
