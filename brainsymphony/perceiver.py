"""Perceiver: distils region, time and context features of all R*T tokens into one latent per region.

See docs/model.md, "Context path (1-D conv + Perceiver)". The reference computes, for every (r, t), a token
u = LN(W_in [A s_r ; B e_t ; C c_rt] + b) and cross-attends R latent queries to all R*T tokens. That costs
~28 GFLOP per subject and a (B, R*T, D) key tensor. :meth:`Perceiver.forward` computes the same numbers exactly
with far less work:

* the context path is linear, so the pre-LayerNorm token is z_rt = a_r + b_t + M w_rt, with a_r from the
  region embedding, b_t from the time embedding (plus every constant bias), M = W3 C Wconv (D x K) and
  w_rt the K-sample zero-padded window of the series around t;
* LN(z) = gamma * P z / sigma + beta (P the centering projection), so a key score is
  q.k_rt = (qp . z_rt) / sigma_rt + const(q), with qp = P diag(gamma) W_k^T q / sqrt(d_h); the constant
  cancels in the softmax, and qp . z_rt = QA[q, r] + QB[q, t] + QM[q] . w_rt needs only small matrices;
* the value sum is linear in z / sigma, so sum_n alpha_n v_n needs only the softmax weights divided by
  sigma summed over t (per region), over r (per time point) and against the windows.

Only the softmax over the R*T keys of every query and head remains; it is streamed over chunks of regions
with a running shift, so memory does not grow with R*T, and the reduced maps (region x region: sum over t;
region x time: sum over regions) come from the same weights. ``method="explicit"`` is a plain chunked
implementation of the reference (tokens, keys, values) kept for testing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from brainsymphony.attention import TransformerBlock
from brainsymphony.config import BrainSymphonyConfig

#: Largest per-chunk softmax mass accepted before the running shift is moved (keeps sums far from overflow).
_MAX_CHUNK_MASS = math.exp(40.0)
#: Accelerators take larger chunks (fewer kernel launches; memory is still bounded).
_ACCELERATOR_CHUNK_FACTOR = 32


class PackedCrossAttention(nn.Module):
    """Parameters of a multi-head attention with a packed (3D, D) in-projection, as ``nn.MultiheadAttention``.

    The forward computation lives in :class:`Perceiver`, which never forms the keys explicitly.
    """

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)


@dataclass
class PerceiverOutput:
    """Outputs of :class:`Perceiver`.

    latents : (B, R, D) functional region embeddings; reconstruction : (B, R, T);
    region_attention : (B, R, R) cross-attention summed over time, averaged over heads, or None;
    time_attention : (B, R, T) cross-attention summed over key regions, averaged over heads, or None.
    """

    latents: torch.Tensor
    reconstruction: torch.Tensor
    region_attention: torch.Tensor | None
    time_attention: torch.Tensor | None


@dataclass
class _Terms:
    """Per-subject factors of the pre-LayerNorm tokens z_rt = a_r + b_t + M w_rt."""

    a: torch.Tensor  # (R, D)
    b: torch.Tensor  # (T, D)
    m: torch.Tensor  # (D, K)
    windows: torch.Tensor  # (R, T, K)
    sigma: torch.Tensor  # (R, T) LayerNorm denominators sqrt(var + eps)


class Perceiver(nn.Module):
    """Cross-attention of R learned latents to the R*T fused tokens, latent blocks and reconstruction head.

    Parameters
    ----------
    config : BrainSymphonyConfig
        Uses ``n_regions``, ``n_timepoints``, ``width``, ``perceiver_token_width``, ``context_channels``,
        ``perceiver_heads``, ``perceiver_blocks``, ``mlp_width``, ``dropout``, ``layer_norm_eps``.
    chunk_elements : int
        Target size, in score elements (heads * R * T per region), of one streamed chunk of regions.
    """

    def __init__(self, config: BrainSymphonyConfig, *, chunk_elements: int = 1 << 19) -> None:
        super().__init__()
        width, token_width = config.width, config.perceiver_token_width
        self.heads = config.perceiver_heads
        self.chunk_elements = chunk_elements
        self.latents = nn.Parameter(torch.randn(config.n_regions, width) * 0.02)
        self.roi_proj = nn.Linear(width, token_width)
        self.time_proj = nn.Linear(width, token_width)
        self.signal_proj = nn.Linear(config.context_channels, token_width)
        self.input_proj = nn.Linear(3 * token_width, width)
        self.input_ln = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.cross_attn = PackedCrossAttention(width=width, heads=self.heads)
        self.cross_attn_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.latent_transformers = nn.ModuleList(
            TransformerBlock(
                width=width,
                heads=self.heads,
                mlp_width=config.mlp_width,
                dropout=config.dropout,
                eps=config.layer_norm_eps,
            )
            for _ in range(config.perceiver_blocks)
        )
        self.head = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, config.n_timepoints))

    def forward(
        self,
        region_embeddings: torch.Tensor,
        time_embeddings: torch.Tensor,
        series: torch.Tensor,
        conv: nn.Conv1d,
        positional: torch.Tensor,
        *,
        need_weights: bool = False,
        method: str = "fast",
    ) -> PerceiverOutput:
        """Distil the streams into one latent per region.

        Parameters
        ----------
        region_embeddings : Tensor, shape (B, R, D)
            Spatial stream output s_r.
        time_embeddings : Tensor, shape (B, T, D)
            Temporal stream output e_t.
        series : Tensor, shape (B, R, T)
            The (masked) series the context path convolves.
        conv : nn.Conv1d
            The context path's convolution (1 -> C channels, odd kernel K, padding K // 2).
        positional : Tensor, shape (B, R, D)
            Spatial positional term added to the latent queries.
        need_weights : bool
            Return the reduced cross-attention maps.
        method : {"fast", "explicit"}
            ``fast``: the exact factorised computation (default). ``explicit``: build tokens, keys and values
            chunk by chunk as the reference does (slow; for tests).

        Returns
        -------
        PerceiverOutput
        """
        queries = self._queries(positional)  # (B, H, R, d_h)
        core = {"fast": self._attend_fast, "explicit": self._attend_explicit}[method]
        with torch.autocast(device_type=series.device.type, enabled=False):
            attended, region_map, time_map = core(
                queries.float(),
                region_embeddings.float(),
                time_embeddings.float(),
                series.float(),
                conv,
                need_weights=need_weights,
            )
        attended = attended.to(region_embeddings.dtype)
        batch, heads, regions, head_width = queries.shape
        # (B, H, R, d_h) -> (B, R, D)
        attended = attended.transpose(1, 2).reshape(batch, regions, heads * head_width)
        latents = self.cross_attn_norm(self.cross_attn.out_proj(attended))
        for block in self.latent_transformers:
            latents, _ = block(latents)
        return PerceiverOutput(
            latents=latents,
            reconstruction=self.head(latents),
            region_attention=region_map,
            time_attention=time_map,
        )

    # ----------------------------------------------------------------------------------------------
    def _queries(self, positional: torch.Tensor) -> torch.Tensor:
        """Projected latent queries, (B, R, D) -> (B, H, R, d_h)."""
        width = self.latents.shape[1]
        query_in = self.latents.unsqueeze(0) + positional
        weight, bias = self.cross_attn.in_proj_weight[:width], self.cross_attn.in_proj_bias[:width]
        queries = F.linear(query_in, weight, bias)
        batch, regions, _ = queries.shape
        return queries.view(batch, regions, self.heads, width // self.heads).transpose(1, 2)

    def _token_terms(
        self, spatial: torch.Tensor, temporal: torch.Tensor, series: torch.Tensor, conv: nn.Conv1d
    ) -> _Terms:
        """Factor the pre-LayerNorm tokens of one subject: spatial (R, D), temporal (T, D), series (R, T)."""
        token_width = self.roi_proj.out_features
        w_in = self.input_proj.weight.float()
        w_region, w_time, w_signal = (
            w_in[:, :token_width],
            w_in[:, token_width : 2 * token_width],
            w_in[:, 2 * token_width :],
        )
        conv_weight = conv.weight.float()[:, 0, :]  # (C, K)
        conv_bias = conv_weight.new_zeros(conv_weight.shape[0]) if conv.bias is None else conv.bias.float()
        signal_weight = self.signal_proj.weight.float()  # (P, C)
        a = F.linear(spatial, self.roi_proj.weight.float(), self.roi_proj.bias.float()) @ w_region.T
        constant = w_signal @ (signal_weight @ conv_bias + self.signal_proj.bias.float()) + self.input_proj.bias.float()
        b = F.linear(temporal, self.time_proj.weight.float(), self.time_proj.bias.float()) @ w_time.T + constant
        m = w_signal @ (signal_weight @ conv_weight)  # (D, K)
        kernel = conv_weight.shape[1]
        padded = F.pad(series, (kernel // 2, kernel // 2))
        windows = padded.unfold(-1, kernel, 1)  # (R, T, K)
        sigma = self._sigma(a, b, m, windows)
        return _Terms(a=a, b=b, m=m, windows=windows, sigma=sigma)

    def _sigma(self, a: torch.Tensor, b: torch.Tensor, m: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """LayerNorm denominators sqrt(var(z_rt) + eps), (R, T), without forming the (R, T, D) tokens.

        |P z|^2 = |Pa_r|^2 + |Pb_t|^2 + w' G w + 2 Pa_r.Pb_t + 2 (M'P a_r).w + 2 (M'P b_t).w with G = M'PM,
        evaluated in float64 so the expansion loses nothing to cancellation.
        """
        width = a.shape[1]
        a64, b64, m64, w64 = (t.double() for t in (a, b, m, windows))
        a64 = a64 - a64.mean(dim=-1, keepdim=True)
        b64 = b64 - b64.mean(dim=-1, keepdim=True)
        m64 = m64 - m64.mean(dim=0, keepdim=True)
        gram = m64.T @ m64  # (K, K)
        square = (
            (a64 * a64).sum(-1)[:, None]
            + (b64 * b64).sum(-1)[None, :]
            + 2.0 * (a64 @ b64.T)
            + torch.einsum("rtk,kl,rtl->rt", w64, gram, w64)
            + 2.0 * torch.einsum("rtk,rk->rt", w64, a64 @ m64)
            + 2.0 * torch.einsum("rtk,tk->rt", w64, b64 @ m64)
        )
        return torch.sqrt(square.clamp_min(0.0) / width + self.input_ln.eps).to(a.dtype)

    def _score_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """qp = P diag(gamma) W_k^T q / sqrt(d_h) for every head, (H, R, d_h) -> (H*R, D)."""
        heads, regions, head_width = queries.shape
        width = heads * head_width
        key_weight = self.cross_attn.in_proj_weight[width : 2 * width].float().view(heads, head_width, width)
        qt = torch.matmul(queries, key_weight) * self.input_ln.weight.float() / math.sqrt(head_width)
        qt = qt - qt.mean(dim=-1, keepdim=True)
        return qt.reshape(heads * regions, width)

    def _attend_fast(
        self,
        queries: torch.Tensor,
        spatial: torch.Tensor,
        temporal: torch.Tensor,
        series: torch.Tensor,
        conv: nn.Conv1d,
        *,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Exact factorised cross-attention; returns (B, H, R, d_h) and the optional reduced maps."""
        batch, heads, query_count, head_width = queries.shape
        outputs, region_maps, time_maps = [], [], []
        for subject in range(batch):
            terms = self._token_terms(spatial[subject], temporal[subject], series[subject], conv)
            stream = _KeyStream(self._score_queries(queries[subject]), terms, need_weights=need_weights)
            chunk = self.chunk_elements * (1 if series.device.type == "cpu" else _ACCELERATOR_CHUNK_FACTOR)
            mean_token, region_weights, time_weights = stream.run(chunk)
            outputs.append(self._values(mean_token, heads, head_width))
            if region_weights is not None and time_weights is not None:
                region_maps.append(region_weights.view(heads, query_count, -1).mean(0))
                time_maps.append(time_weights.view(heads, query_count, -1).mean(0))
        attended = torch.stack(outputs)
        if not need_weights:
            return attended, None, None
        return attended, torch.stack(region_maps), torch.stack(time_maps)

    def _values(self, normalised: torch.Tensor, heads: int, head_width: int) -> torch.Tensor:
        """Attention output per head from the weighted mean normalised token, (H*R, D) -> (H, R, d_h)."""
        width = heads * head_width
        value_weight = self.cross_attn.in_proj_weight[2 * width :].float().view(heads, head_width, width)
        value_bias = self.cross_attn.in_proj_bias[2 * width :].float().view(heads, 1, head_width)
        gamma, beta = self.input_ln.weight.float(), self.input_ln.bias.float()
        per_head = (normalised * gamma).view(heads, -1, width)
        # sum_n alpha_n v_n = W_v (gamma * mean normalised + beta) + b_v, since the weights sum to one
        return per_head @ value_weight.transpose(1, 2) + (value_weight @ beta).unsqueeze(1) + value_bias

    # ----------------------------------------------------------------------------------------------
    def _attend_explicit(
        self,
        queries: torch.Tensor,
        spatial: torch.Tensor,
        temporal: torch.Tensor,
        series: torch.Tensor,
        conv: nn.Conv1d,
        *,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Reference computation, streamed over chunks of regions with an online softmax."""
        batch, heads, query_count, head_width = queries.shape
        width = heads * head_width
        frames = series.shape[-1]
        key_weight, value_weight = (
            self.cross_attn.in_proj_weight[width : 2 * width],
            self.cross_attn.in_proj_weight[2 * width :],
        )
        key_bias, value_bias = (
            self.cross_attn.in_proj_bias[width : 2 * width],
            self.cross_attn.in_proj_bias[2 * width :],
        )
        step = max(1, self.chunk_elements // (heads * query_count * frames))
        outputs, region_maps, time_maps = [], [], []
        for subject in range(batch):
            q = queries[subject] / math.sqrt(head_width)  # (H, R, d_h)
            region_tokens = self.roi_proj(spatial[subject])  # (R, P)
            time_tokens = self.time_proj(temporal[subject])  # (T, P)
            shift = torch.full((heads, query_count, 1), -torch.inf)
            total = torch.zeros(heads, query_count, 1)
            acc = torch.zeros(heads, query_count, head_width)
            region_mass: list[torch.Tensor] = []
            time_mass = torch.zeros(heads, query_count, frames)
            for start in range(0, series.shape[1], step):
                stop = min(series.shape[1], start + step)
                count = stop - start
                context = conv(series[subject, start:stop].unsqueeze(1)).transpose(1, 2)  # (r, T, C)
                tokens = torch.cat(
                    [
                        region_tokens[start:stop, None, :].expand(count, frames, -1),
                        time_tokens[None].expand(count, frames, -1),
                        self.signal_proj(context),
                    ],
                    dim=-1,
                ).reshape(count * frames, -1)
                normed = self.input_ln(self.input_proj(tokens))  # (r*T, D)
                keys = F.linear(normed, key_weight, key_bias).view(-1, heads, head_width).transpose(0, 1)
                values = F.linear(normed, value_weight, value_bias).view(-1, heads, head_width).transpose(0, 1)
                scores = q @ keys.transpose(1, 2)  # (H, R, r*T)
                new_shift = torch.maximum(shift, scores.amax(dim=-1, keepdim=True))
                rescale = torch.exp(shift - new_shift)
                weights = torch.exp(scores - new_shift)
                total = total * rescale + weights.sum(-1, keepdim=True)
                acc = acc * rescale + weights @ values
                region_mass = [m * rescale for m in region_mass]
                region_mass.append(weights.view(heads, query_count, count, frames).sum(-1))
                time_mass = time_mass * rescale + weights.view(heads, query_count, count, frames).sum(2)
                shift = new_shift
            outputs.append(acc / total)
            if need_weights:
                region_maps.append((torch.cat(region_mass, dim=-1) / total).mean(0))
                time_maps.append((time_mass / total).mean(0))
        attended = torch.stack(outputs)
        if not need_weights:
            return attended, None, None
        return attended, torch.stack(region_maps), torch.stack(time_maps)


class _KeyStream:
    """Online softmax of one subject's score queries over all R*T keys, chunk by chunk of regions.

    Scores are laid out (N, r*T) for a chunk of r regions (N = H * R queries), so that building them and
    reducing them are single matrix products:
    numerator = QB tiled + [QM | -shift | QA_chunk] @ [windows ; sigma ; region one-hot]   (= S - shift*sigma)
    weights   = exp(numerator / sigma + log(1/sigma))                                  (= p / sigma)
    sums      = weights @ [windows | sigma | region one-hot | sigma * one-hot]
    """

    def __init__(self, qp: torch.Tensor, terms: _Terms, *, need_weights: bool) -> None:
        self.terms = terms
        self.need_weights = need_weights
        regions, frames, kernel = terms.windows.shape
        self.regions, self.frames, self.kernel = regions, frames, kernel
        self.qa = qp @ terms.a.T  # (N, R)
        self.qb = qp @ terms.b.T  # (N, T)
        self.qm = qp @ terms.m  # (N, K)
        self.windows = terms.windows.reshape(regions * frames, kernel)  # (R*T, K)
        self.sigma = terms.sigma.reshape(regions * frames)
        self.inv_sigma = self.sigma.reciprocal()
        self.log_inv_sigma = self.inv_sigma.log()

    def run(self, chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Stream all keys; see :meth:`Perceiver._attend_fast`.

        Returns
        -------
        mean_normalised : Tensor, shape (N, D)
            sum_rt alpha_rt P z_rt / sigma_rt.
        region_weights : Tensor, shape (N, R), or None
            sum_t alpha_rt.
        time_weights : Tensor, shape (N, T), or None
            sum_r alpha_rt.
        """
        terms, kernel, frames = self.terms, self.kernel, self.frames
        n_queries = self.qa.shape[0]
        step = max(1, min(self.regions, chunk_elements // (n_queries * frames)))
        one_hot = torch.eye(step, dtype=self.qa.dtype, device=self.qa.device).repeat_interleave(frames, dim=1)
        self.one_hot = one_hot  # (step, step*T)
        self.qb_tiled = self.qb.repeat(1, step)  # (N, step*T)

        shift: torch.Tensor | None = None
        window_sum = self.qa.new_zeros(n_queries, kernel)
        time_sum = self.qa.new_zeros(n_queries, frames)
        time_mass = self.qa.new_zeros(n_queries, frames) if self.need_weights else None
        total = self.qa.new_zeros(n_queries)
        region_sum = self.qa.new_empty(n_queries, self.regions)
        region_mass = self.qa.new_empty(n_queries, self.regions) if self.need_weights else None
        region_shift = self.qa.new_empty(n_queries, self.regions)
        for start in range(0, self.regions, step):
            stop = min(self.regions, start + step)
            if shift is None:
                shift = self._chunk_max(start, stop)
            weights, sums = self._chunk(shift, start, stop)
            mass = sums[:, kernel]
            if not bool(torch.isfinite(mass).all()) or float(mass.detach().max()) > _MAX_CHUNK_MASS:
                new_shift = torch.maximum(shift, self._chunk_max(start, stop))
                rescale = torch.exp(shift - new_shift)
                for accumulator in (window_sum, time_sum, time_mass):
                    if accumulator is not None:
                        accumulator *= rescale[:, None]
                total *= rescale
                shift = new_shift
                weights, sums = self._chunk(shift, start, stop)
                mass = sums[:, kernel]
            count = stop - start
            window_sum += sums[:, :kernel]
            total += mass
            region_sum[:, start:stop] = sums[:, kernel + 1 : kernel + 1 + count]
            region_shift[:, start:stop] = shift[:, None]
            per_region = weights.view(n_queries, count, frames)
            time_sum += per_region.sum(1)
            if region_mass is not None and time_mass is not None:
                region_mass[:, start:stop] = sums[:, kernel + 1 + count :]
                time_mass += (per_region * terms.sigma[start:stop]).sum(1)
        assert shift is not None  # at least one region
        correction = torch.exp(region_shift - shift[:, None])
        scale = total.reciprocal()[:, None]
        normalised = ((region_sum * correction) @ terms.a + time_sum @ terms.b + window_sum @ terms.m.T) * scale
        normalised = normalised - normalised.mean(dim=-1, keepdim=True)
        if region_mass is None or time_mass is None:
            return normalised, None, None
        return normalised, region_mass * correction * scale, time_mass * scale

    def _numerators(self, start: int, stop: int, shift: torch.Tensor | None) -> torch.Tensor:
        """qp . z_rt (minus shift * sigma_rt when a shift is given) for regions start..stop, (N, r*T)."""
        count, frames = stop - start, self.frames
        keys = slice(start * frames, stop * frames)
        left = [self.qm, self.qa[:, start:stop]]
        right = [self.windows[keys].T, self.one_hot[:count, : count * frames]]
        if shift is not None:
            left.append(-shift[:, None])
            right.append(self.sigma[None, keys])
        return torch.addmm(self.qb_tiled[:, : count * frames], torch.cat(left, dim=1), torch.cat(right, dim=0))

    def _chunk_max(self, start: int, stop: int) -> torch.Tensor:
        """Exact maximum score per query over regions start..stop, (N,)."""
        keys = slice(start * self.frames, stop * self.frames)
        return (self._numerators(start, stop, None) * self.inv_sigma[keys]).amax(dim=1)

    def _chunk(self, shift: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights exp(score - shift) / sigma (N, r*T) and their reductions (N, K + 1 + r [+ r])."""
        count, frames = stop - start, self.frames
        keys = slice(start * frames, stop * frames)
        weights = self._numerators(start, stop, shift)
        if torch.is_grad_enabled() and weights.requires_grad:  # training: out-of-place for autograd
            weights = torch.addcmul(self.log_inv_sigma[keys], weights, self.inv_sigma[keys]).exp()
        else:  # inference: in place, no extra buffers
            torch.addcmul(self.log_inv_sigma[keys], weights, self.inv_sigma[keys], out=weights)
            weights.exp_()
        one_hot = self.one_hot[:count, : count * frames].T  # (r*T, r)
        columns = [self.windows[keys], self.sigma[keys, None], one_hot]
        if self.need_weights:
            columns.append(one_hot * self.sigma[keys, None])
        return weights, weights @ torch.cat(columns, dim=1)
