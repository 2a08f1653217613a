"""Naive reference implementations written straight from the formulas of docs/model.md (loops, no tricks).

They are slow and only meant for the tiny odd-sized configurations of the tests.
"""

from __future__ import annotations

import math

import torch


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm of one vector (D,)."""
    mean = sum(x[i] for i in range(x.shape[0])) / x.shape[0]
    var = sum((x[i] - mean) ** 2 for i in range(x.shape[0])) / x.shape[0]
    return (x - mean) / math.sqrt(float(var) + eps) * weight + bias


def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """y_o = sum_i W_oi x_i + b_o for one vector."""
    out = torch.stack([sum(layer.weight[o, i] * x[i] for i in range(x.shape[0])) for o in range(layer.out_features)])
    return out + layer.bias if layer.bias is not None else out


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def self_attention(tokens: list[torch.Tensor], attn, heads: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Multi-head attention of a token list; returns outputs and weights (H, N, N)."""
    width = tokens[0].shape[0]
    dh = width // heads
    qkv = [attn.qkv.weight @ t for t in tokens]
    q = [v[:width] for v in qkv]
    k = [v[width : 2 * width] for v in qkv]
    v = [v[2 * width :] for v in qkv]
    weights = torch.zeros(heads, len(tokens), len(tokens))
    outputs = []
    for i in range(len(tokens)):
        mixed = torch.zeros(width)
        for h in range(heads):
            part = slice(h * dh, (h + 1) * dh)
            scores = [float(q[i][part] @ k[j][part]) / math.sqrt(dh) for j in range(len(tokens))]
            for j, w in enumerate(softmax(scores)):
                weights[h, i, j] = w
                mixed[part] += w * v[j][part]
        outputs.append(linear(mixed, attn.fc_out))
    return outputs, weights


def pre_norm_block(tokens: list[torch.Tensor], block, heads: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    normed = [layer_norm(t, block.norm1.weight, block.norm1.bias, block.norm1.eps) for t in tokens]
    attended, weights = self_attention(normed, block.attn, heads)
    tokens = [t + a for t, a in zip(tokens, attended, strict=True)]
    out = []
    for t in tokens:
        hidden = gelu(linear(layer_norm(t, block.norm2.weight, block.norm2.bias, block.norm2.eps), block.mlp[0]))
        out.append(t + linear(hidden, block.mlp[2]))
    return out, weights


def spatial_stream(fmri: torch.Tensor, stream, heads: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """fmri (R, T) of one subject -> embeddings (R, D) and per-layer maps (H, R, R)."""
    tokens = [linear(fmri[r], stream.embedding_layer) + stream.pos_enc.pe[0, r] for r in range(fmri.shape[0])]
    maps = []
    for block in stream.layers:
        tokens, weights = pre_norm_block(tokens, block, heads)
        maps.append(weights)
    return torch.stack(tokens), maps


def sinusoid(t: int, c: int, width: int) -> float:
    angle = t / (10000.0 ** ((c - c % 2) / width))
    return math.sin(angle) if c % 2 == 0 else math.cos(angle)


def temporal_stream(fmri: torch.Tensor, stream, heads: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """fmri (R, T) of one subject -> embeddings (T, D) and per-layer maps (H, T, T)."""
    width = stream.embedding_layer.out_features
    tokens = []
    for t in range(fmri.shape[1]):
        code = torch.tensor([sinusoid(t, c, width) for c in range(width)])
        tokens.append(linear(fmri[:, t], stream.embedding_layer) + code)
    maps = []
    for block in stream.layers:
        tokens, weights = pre_norm_block(tokens, block, heads)
        maps.append(weights)
    return torch.stack(tokens), maps


def context_features(series: torch.Tensor, conv) -> torch.Tensor:
    """series (R, T) -> (R, T, C): c_rtk = b_k + sum_j w_kj x_r,t+j-K//2 (zero outside)."""
    regions, frames = series.shape
    channels, _, kernel = conv.weight.shape
    out = torch.zeros(regions, frames, channels)
    for r in range(regions):
        for t in range(frames):
            for k in range(channels):
                value = conv.bias[k]
                for j in range(kernel):
                    source = t + j - kernel // 2
                    if 0 <= source < frames:
                        value = value + conv.weight[k, 0, j] * series[r, source]
                out[r, t, k] = value
    return out


def perceiver_cross_attention(
    perceiver, spatial: torch.Tensor, temporal: torch.Tensor, series: torch.Tensor, conv, positional: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Literal cross-attention of one subject.

    Returns the normalised output after out_proj and cross_attn_norm (R, D), and the head-averaged map
    (R, R*T) with token index r*T + t.
    """
    regions, frames = series.shape
    width = spatial.shape[1]
    heads = perceiver.heads
    dh = width // heads
    features = context_features(series, conv)
    w, b = perceiver.cross_attn.in_proj_weight, perceiver.cross_attn.in_proj_bias
    keys, values = [], []
    for r in range(regions):
        for t in range(frames):
            token = torch.cat(
                [
                    linear(spatial[r], perceiver.roi_proj),
                    linear(temporal[t], perceiver.time_proj),
                    linear(features[r, t], perceiver.signal_proj),
                ]
            )
            u = layer_norm(linear(token, perceiver.input_proj), perceiver.input_ln.weight, perceiver.input_ln.bias)
            keys.append(w[width : 2 * width] @ u + b[width : 2 * width])
            values.append(w[2 * width :] @ u + b[2 * width :])
    full_map = torch.zeros(regions, regions * frames)
    outputs = []
    for i in range(regions):
        query = w[:width] @ (perceiver.latents[i] + positional[i]) + b[:width]
        mixed = torch.zeros(width)
        for h in range(heads):
            part = slice(h * dh, (h + 1) * dh)
            scores = [float(query[part] @ key[part]) / math.sqrt(dh) for key in keys]
            for n, a in enumerate(softmax(scores)):
                mixed[part] += a * values[n][part]
                full_map[i, n] += a / heads
        out = linear(mixed, perceiver.cross_attn.out_proj)
        outputs.append(layer_norm(out, perceiver.cross_attn_norm.weight, perceiver.cross_attn_norm.bias))
    return torch.stack(outputs), full_map


def signed_attention_literal(scores: torch.Tensor) -> torch.Tensor:
    """A_ij = sign(S_ij) exp(|S_ij|) / (sum_k exp(|S_ik|) + 1e-10) for a (N, N) matrix, in float64."""
    n = scores.shape[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        denominator = sum(math.exp(abs(float(scores[i, k]))) for k in range(n)) + 1e-10
        for j in range(n):
            s = float(scores[i, j])
            sign = (s > 0) - (s < 0)
            out[i, j] = sign * math.exp(abs(s)) / denominator
    return out


def diffusion_weighting(sc: torch.Tensor, steps: int, theta: float) -> torch.Tensor:
    """sum_k theta^k Ahat^k with Ahat = D^-1/2 sc D^-1/2 (D = row sums of |sc|), for one (R, R) matrix."""
    n = sc.shape[0]
    degree = [sum(abs(float(sc[i, k])) for k in range(n)) for i in range(n)]
    ahat = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            ahat[i, j] = float(sc[i, j]) / math.sqrt(degree[i] * degree[j])
    total = torch.eye(n, dtype=torch.float64)
    power = torch.eye(n, dtype=torch.float64)
    for k in range(1, steps):
        power = power @ ahat
        total = total + theta**k * power
    return total


def signed_layer(x: torch.Tensor, weightings: list[torch.Tensor], layer) -> tuple[torch.Tensor, torch.Tensor]:
    """One post-norm signed attention layer for one subject, x (R, D)."""
    regions, width = x.shape
    heads = layer.heads
    dh = width // heads
    q = torch.stack([linear(x[i], layer.q_linear) for i in range(regions)])
    k = torch.stack([linear(x[i], layer.k_linear) for i in range(regions)])
    v = torch.stack([linear(x[i], layer.v_linear) for i in range(regions)])
    attention = torch.zeros(heads, regions, regions, dtype=torch.float64)
    for h in range(heads):
        part = slice(h * dh, (h + 1) * dh)
        scores = q[:, part] @ k[:, part].T / math.sqrt(dh)
        for weighting in weightings:
            attention[h] += signed_attention_literal(scores * weighting) / len(weightings)
    out = []
    for i in range(regions):
        mixed = torch.cat([(attention[h, i].float() @ v[:, h * dh : (h + 1) * dh]) for h in range(heads)])
        y = layer_norm(x[i] + linear(mixed, layer.out_linear), layer.layer_norm1.weight, layer.layer_norm1.bias)
        hidden = torch.relu(linear(y, layer.ffn[0]))
        out.append(layer_norm(y + linear(hidden, layer.ffn[2]), layer.layer_norm2.weight, layer.layer_norm2.bias))
    return torch.stack(out), attention.float()


def fusion_gate(f: torch.Tensor, s: torch.Tensor, gate) -> tuple[torch.Tensor, torch.Tensor]:
    """fused, g for one subject, f and s (R, D)."""
    fused, gates = [], []
    for r in range(f.shape[0]):
        g = torch.sigmoid(linear(torch.cat([f[r], s[r]]), gate.proj))
        gates.append(g)
        fused.append(g * f[r] + (1 - g) * s[r])
    return torch.stack(fused), torch.stack(gates)
