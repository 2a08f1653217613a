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

Only the softmax over the R*T keys of every query and head remains, and the reduced maps (region x region: sum
over t; region x time: sum over regions) come from the same weights. On CPU without autograd it runs as one
compiled pass (:mod:`brainsymphony.fused_stream`); otherwise it is streamed for the whole batch at once over
chunks of regions with a running shift, so memory does not grow with R*T, each chunk built and reduced by two
batched matrix products (see :class:`_KeyStream`). ``method="explicit"`` is a plain chunked implementation of
the reference (tokens, keys, values) kept for testing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from brainsymphony.attention import TransformerBlock
from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.fused_stream import StreamSums, fused_stream_applies, fused_stream_sums

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
    """Factors of a batch's pre-LayerNorm tokens z_rt = a_r + b_t + M w_rt."""

    a: torch.Tensor  # (B, R, D)
    b: torch.Tensor  # (B, T, D)
    m: torch.Tensor  # (D, K), shared by the batch
    windows: torch.Tensor  # (B, R, T, K)
    sigma: torch.Tensor  # (B, R, T) LayerNorm denominators sqrt(var + eps)


class Perceiver(nn.Module):
    """Cross-attention of R learned latents to the R*T fused tokens, latent blocks and reconstruction head.

    Parameters
    ----------
    config : BrainSymphonyConfig
        Uses ``n_regions``, ``n_timepoints``, ``width``, ``perceiver_token_width``, ``context_channels``,
        ``perceiver_heads``, ``perceiver_blocks``, ``mlp_width``, ``dropout``, ``layer_norm_eps``.
    chunk_elements : int
        Target size, in score elements (B * H * R * T per region), of one streamed chunk of regions. The
        default, 32 MB of float32, was the fastest of 8 to 64 MB on a 2-core machine: fewer chunks means fewer
        small per-chunk operations, while larger ones fall out of the cache.
    fused_stream : bool
        Stream with the compiled pass of :mod:`brainsymphony.fused_stream` where it applies (CPU float32
        without autograd, extension built); False always runs the PyTorch stream and its chunks.
    """

    def __init__(
        self, config: BrainSymphonyConfig, *, chunk_elements: int = 1 << 23, fused_stream: bool = True
    ) -> None:
        super().__init__()
        self.fused_stream = fused_stream
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
        """Factor the pre-LayerNorm tokens: spatial (B, R, D), temporal (B, T, D), series (B, R, T)."""
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
        windows = padded.unfold(-1, kernel, 1)  # (B, R, T, K)
        sigma = self._sigma(a, b, m, windows)
        return _Terms(a=a, b=b, m=m, windows=windows, sigma=sigma)

    def _sigma(self, a: torch.Tensor, b: torch.Tensor, m: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """LayerNorm denominators sqrt(var(z_rt) + eps), (B, R, T), without forming the (B, R, T, D) tokens.

        |P z|^2 = |Pa_r|^2 + |Pb_t|^2 + 2 Pa_r.Pb_t + w' (G w + 2 M'P b_t) + 2 (M'P a_r).w with G = M'PM,
        evaluated in float64 so the expansion loses nothing to cancellation.
        """
        width = a.shape[-1]
        a64, b64, m64, w64 = (t.double() for t in (a, b, m, windows))
        a64 = a64 - a64.mean(dim=-1, keepdim=True)
        b64 = b64 - b64.mean(dim=-1, keepdim=True)
        m64 = m64 - m64.mean(dim=0, keepdim=True)
        time_side = torch.matmul(w64, m64.T @ m64).add_(2.0 * (b64 @ m64).unsqueeze(1))  # G w + 2 M'P b_t
        region_side = torch.matmul(w64, 2.0 * (a64 @ m64).unsqueeze(-1)).squeeze(-1)  # 2 (M'P a_r).w, (B, R, T)
        square = (
            (a64 * a64).sum(-1).unsqueeze(-1)
            + (b64 * b64).sum(-1).unsqueeze(-2)
            + 2.0 * (a64 @ b64.transpose(1, 2))
            + torch.einsum("brtk,brtk->brt", w64, time_side)
            + region_side
        )
        return torch.sqrt(square.clamp_min(0.0) / width + self.input_ln.eps).to(a.dtype)

    def _score_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """qp = P diag(gamma) W_k^T q / sqrt(d_h) for every head, (B, H, R, d_h) -> (B, H*R, D)."""
        batch, heads, regions, head_width = queries.shape
        width = heads * head_width
        key_weight = self.cross_attn.in_proj_weight[width : 2 * width].float().view(heads, head_width, width)
        qt = torch.matmul(queries, key_weight) * self.input_ln.weight.float() / math.sqrt(head_width)
        qt = qt - qt.mean(dim=-1, keepdim=True)
        return qt.reshape(batch, heads * regions, width)

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
        """Exact factorised cross-attention of the whole batch; returns (B, H, R, d_h) and the optional maps."""
        batch, heads, query_count, head_width = queries.shape
        terms = self._token_terms(spatial, temporal, series, conv)
        fused = self.fused_stream and fused_stream_applies(series)
        stream = _KeyStream(self._score_queries(queries), terms, need_weights=need_weights, fused=fused)
        chunk = self.chunk_elements * (1 if series.device.type == "cpu" else _ACCELERATOR_CHUNK_FACTOR)
        sums, region_weights, time_weights = stream.run(chunk)
        # sum_rt alpha_rt z_rt / sigma_rt from its three factors, (B, N, R + T + K) @ (B, R + T + K, D)
        factors = torch.cat([terms.a, terms.b, terms.m.T.expand(batch, -1, -1)], dim=1)
        normalised = sums @ factors
        normalised = normalised - normalised.mean(dim=-1, keepdim=True)
        attended = self._values(normalised, heads, head_width)
        if not need_weights or time_weights is None:
            return attended, None, None
        region_map = region_weights.view(batch, heads, query_count, -1).mean(1)
        time_map = time_weights.view(batch, heads, query_count, -1).mean(1)
        return attended, region_map, time_map

    def _values(self, normalised: torch.Tensor, heads: int, head_width: int) -> torch.Tensor:
        """Attention output per head from the weighted mean normalised token, (B, H*R, D) -> (B, H, R, d_h)."""
        width = heads * head_width
        value_weight = self.cross_attn.in_proj_weight[2 * width :].float().view(heads, head_width, width)
        value_bias = self.cross_attn.in_proj_bias[2 * width :].float().view(heads, 1, head_width)
        gamma, beta = self.input_ln.weight.float(), self.input_ln.bias.float()
        per_head = (normalised * gamma).view(normalised.shape[0], heads, -1, width)
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
    """Online softmax of a batch's score queries over all R*T keys, chunk by chunk of regions.

    A chunk of r regions is laid out key-major, (B*r, T, N) for N = H * R queries, so that building and
    reducing it are batched matrix products over the B*r (subject, region) pairs, whose inner sizes are a
    few window columns and the T frames. With everything divided by sigma beforehand,
    exponent  = [w / sigma | 1 / sigma | 1 | -log sigma] @ [QM' ; QA'_r ; -shift' ; 1] + QB' / sigma
              = score - shift - log sigma
    weights   = exp(exponent)                                                  (= p / sigma)
    sums      = [w | 1 | sigma]' @ weights     (window sums, sum_t p / sigma, sum_t p = region mass)
    time sums = ones' @ weights                (over the chunk's regions, one product per subject)
    """

    def __init__(self, qp: torch.Tensor, terms: _Terms, *, need_weights: bool, fused: bool) -> None:
        self.need_weights = need_weights
        self.fused = fused
        batch, regions, frames, kernel = terms.windows.shape
        self.batch, self.regions, self.frames, self.kernel = batch, regions, frames, kernel
        self.qa_t = (terms.a @ qp.transpose(1, 2)).contiguous()  # (B, R, N)
        self.qb_t = (terms.b @ qp.transpose(1, 2)).unsqueeze(1)  # (B, 1, T, N)
        self.qm_t = terms.m.T @ qp.transpose(1, 2)  # (B, K, N)
        self.windows = terms.windows
        sigma = terms.sigma.unsqueeze(-1)  # (B, R, T, 1)
        self.sigma = sigma
        self.inv_sigma = sigma.reciprocal()
        # set by run() for the PyTorch stream: (B, R, T, K + 3), the key side of the exponents, and
        # (B, R, T, K + 2), that of the reductions; without autograd, the chunk's exponents and its query rows
        self.score_columns = self.sum_columns = self.rows = self.qa_t.new_empty(0)
        self.buffer: torch.Tensor | None = None

    def run(self, chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Stream all keys; see :meth:`Perceiver._attend_fast`.

        Returns
        -------
        sums : Tensor, shape (B, N, R + T + K)
            sum_t alpha_rt / sigma_rt, sum_r alpha_rt / sigma_rt and sum_rt alpha_rt w_rt / sigma_rt.
        region_weights : Tensor, shape (B, N, R)
            sum_t alpha_rt.
        time_weights : Tensor, shape (B, N, T), or None
            sum_r alpha_rt, when weights are needed.
        """
        if self.fused:
            inv_sigma = self.inv_sigma.squeeze(-1)
            return self._normalised(
                fused_stream_sums(
                    self.qa_t, self.qb_t.squeeze(1), self.qm_t, self.windows, inv_sigma, need_weights=self.need_weights
                )
            )
        batch, frames, kernel = self.batch, self.frames, self.kernel
        n_queries = self.qa_t.shape[-1]
        sigma, inv_sigma, unit = self.sigma, self.inv_sigma, torch.ones_like(self.sigma)
        self.score_columns = torch.cat([self.windows * inv_sigma, inv_sigma, unit, -sigma.log()], dim=-1)
        self.sum_columns = torch.cat([self.windows, unit, sigma], dim=-1)
        step = max(1, min(self.regions, chunk_elements // (batch * n_queries * frames)))
        self.buffer = None if torch.is_grad_enabled() else self.qa_t.new_empty(batch * step * frames * n_queries)
        if self.buffer is not None:  # the window rows are the same for every chunk: written once
            self.rows = self.qa_t.new_empty(batch, step, kernel + 3, n_queries)
            self.rows[:, :, :kernel] = self.qm_t.unsqueeze(1)
        ones = self.qa_t.new_ones(batch, 1, step)

        shift: torch.Tensor | None = None
        window_sum = self.qa_t.new_zeros(batch, kernel, n_queries)
        time_sum = self.qa_t.new_zeros(batch, frames, n_queries)
        time_mass = self.qa_t.new_zeros(batch, frames, n_queries) if self.need_weights else None
        region_sums: list[torch.Tensor] = []
        region_masses: list[torch.Tensor] = []
        region_shifts: list[torch.Tensor] = []
        for start in range(0, self.regions, step):
            stop = min(self.regions, start + step)
            if shift is None:
                shift = self._chunk_max(start, stop)
            weights, sums = self._chunk(shift, start, stop)
            mass = sums[:, :, kernel + 1].sum(1)  # (B, N)
            if not bool(torch.isfinite(mass).all()) or float(mass.detach().max()) > _MAX_CHUNK_MASS:
                new_shift = torch.maximum(shift, self._chunk_max(start, stop))
                rescale = torch.exp(shift - new_shift).unsqueeze(1)  # (B, 1, N)
                window_sum = window_sum * rescale
                time_sum = time_sum * rescale
                if time_mass is not None:
                    time_mass = time_mass * rescale
                shift = new_shift
                weights, sums = self._chunk(shift, start, stop)
            count = stop - start
            window_sum += sums[:, :, :kernel].sum(1)
            region_sums.append(sums[:, :, kernel])  # (B, r, N)
            region_masses.append(sums[:, :, kernel + 1])
            region_shifts.append(shift.unsqueeze(1).expand(batch, count, n_queries))
            # the sum over the chunk's regions, one (1 x r) @ (r x T*N) product per subject, added in place
            time_sum.view(batch, 1, -1).baddbmm_(ones[:, :, :count], weights.view(batch, count, -1))
            if time_mass is not None:
                time_mass += (weights * self.sigma[:, start:stop]).sum(1)
        assert shift is not None  # at least one region
        correction = torch.exp(torch.cat(region_shifts, dim=1) - shift.unsqueeze(1))  # (B, R, N)
        return self._normalised(
            StreamSums(
                region_sum=torch.cat(region_sums, dim=1) * correction,
                region_mass=torch.cat(region_masses, dim=1) * correction,
                time_sum=time_sum,
                time_mass=time_mass,
                window_sum=window_sum,
            )
        )

    @staticmethod
    def _normalised(sums: StreamSums) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Divide sums relative to one shift per query by their total mass; the return value of :meth:`run`."""
        scale = sums.region_mass.sum(1, keepdim=True).reciprocal()  # 1 / total, (B, 1, N)
        # (B, R + T + K, N) -> (B, N, R + T + K)
        stacked = torch.cat([sums.region_sum, sums.time_sum, sums.window_sum], dim=1) * scale
        time_weights = None if sums.time_mass is None else (sums.time_mass * scale).transpose(1, 2)
        return stacked.transpose(1, 2), (sums.region_mass * scale).transpose(1, 2), time_weights

    def _exponents(self, start: int, stop: int, shift: torch.Tensor | None) -> torch.Tensor:
        """score - shift - log sigma for regions start..stop, or the bare scores without a shift, (B, r, T, N)."""
        batch, count, kernel, frames = self.batch, stop - start, self.kernel, self.frames
        n_queries = self.qa_t.shape[-1]
        if shift is None:  # zero rows for the shift and the log sigma
            tail = self.qa_t.new_zeros(batch, 2, n_queries)
        else:
            tail = torch.stack([-shift, torch.ones_like(shift)], dim=1)
        keys = self.score_columns[:, start:stop].reshape(batch * count, frames, kernel + 3)
        inv_sigma = self.inv_sigma[:, start:stop]
        if self.buffer is None:  # autograd: out of place
            # (B, r, K + 3, N) -> (B*r, K + 3, N)
            query_rows = torch.cat(
                [
                    self.qm_t.unsqueeze(1).expand(batch, count, kernel, n_queries),
                    self.qa_t[:, start:stop].unsqueeze(2),
                    tail.unsqueeze(1).expand(batch, count, 2, n_queries),
                ],
                dim=2,
            ).reshape(batch * count, kernel + 3, n_queries)
            exponents = torch.bmm(keys, query_rows).view(batch, count, frames, n_queries)
            return torch.addcmul(exponents, self.qb_t, inv_sigma)
        rows = self.rows[:, :count]  # only the region and shift rows change from chunk to chunk
        rows[:, :, kernel] = self.qa_t[:, start:stop]
        rows[:, :, kernel + 1 :] = tail.unsqueeze(1)
        exponents = self.buffer[: batch * count * frames * n_queries].view(batch * count, frames, n_queries)
        torch.bmm(keys, rows.reshape(batch * count, kernel + 3, n_queries), out=exponents)
        exponents = exponents.view(batch, count, frames, n_queries)
        return torch.addcmul(exponents, self.qb_t, inv_sigma, out=exponents)

    def _chunk_max(self, start: int, stop: int) -> torch.Tensor:
        """Exact maximum score per query over regions start..stop, (B, N)."""
        return self._exponents(start, stop, None).flatten(1, 2).amax(dim=1)

    def _chunk(self, shift: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights exp(score - shift) / sigma, (B, r, T, N), and their reductions, (B, r, K + 2, N)."""
        batch, count, frames = self.batch, stop - start, self.frames
        exponents = self._exponents(start, stop, shift)
        weights = exponents.exp() if self.buffer is None else exponents.exp_()
        keys = self.sum_columns[:, start:stop].reshape(batch * count, frames, self.kernel + 2)
        sums = torch.bmm(keys.transpose(1, 2), weights.view(batch * count, frames, -1))  # (B*r, K + 2, N)
        return weights, sums.view(batch, count, self.kernel + 2, -1)
