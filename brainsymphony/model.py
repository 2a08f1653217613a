"""``BrainSymphony``: the streams, the Perceiver and the fusion gate assembled by mode."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from brainsymphony.config import BrainSymphonyConfig
from brainsymphony.context import ContextPath
from brainsymphony.fusion import FusionGate
from brainsymphony.perceiver import Perceiver
from brainsymphony.spatial import SpatialStream
from brainsymphony.structural import SignedGraphTransformer
from brainsymphony.temporal import TemporalStream

#: Names accepted by ``attention=``.
ATTENTION_MAPS = ("spatial", "temporal", "perceiver", "structural")


@dataclass
class BrainSymphonyOutput:
    """Everything one forward pass returns; a field is None when its stream or map was not computed.

    Attributes
    ----------
    functional, structural, fused, gates : Tensor, shape (B, R, D), or None
        Region embeddings of each stream, the fused embedding and the gate g (multimodal only).
    reconstruction : Tensor, shape (B, R, T), or None
        Perceiver reconstruction of the series.
    region_embeddings : Tensor, shape (B, R, D), or None
        Spatial stream output.
    time_embeddings : Tensor, shape (B, T, D), or None
        Temporal stream output.
    spatial_attention, temporal_attention, structural_attention : list of Tensor, or None
        One (B, H, R, R) / (B, H, T, T) / (B, H, R, R) map per layer; structural maps are signed.
    perceiver_region_attention : Tensor, shape (B, R, R), or None
        Latent (query region) x key region, cross-attention summed over time, mean over heads.
    perceiver_time_attention : Tensor, shape (B, R, T), or None
        Latent x time point, summed over key regions, mean over heads.
    """

    functional: torch.Tensor | None = None
    structural: torch.Tensor | None = None
    fused: torch.Tensor | None = None
    gates: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    region_embeddings: torch.Tensor | None = None
    time_embeddings: torch.Tensor | None = None
    spatial_attention: list[torch.Tensor] | None = None
    temporal_attention: list[torch.Tensor] | None = None
    perceiver_region_attention: torch.Tensor | None = None
    perceiver_time_attention: torch.Tensor | None = None
    structural_attention: list[torch.Tensor] | None = None


class BrainSymphony(nn.Module):
    """The BrainSymphony foundation model.

    Parameters
    ----------
    config : BrainSymphonyConfig, optional
        Defaults to :meth:`BrainSymphonyConfig.published`. ``mode`` decides which streams exist.
    """

    def __init__(self, config: BrainSymphonyConfig | None = None) -> None:
        super().__init__()
        self.config = config or BrainSymphonyConfig.published()
        cfg = self.config
        self.spatial = SpatialStream(cfg) if cfg.has_functional else None
        self.temporal = TemporalStream(cfg) if cfg.has_functional else None
        self.context = ContextPath(cfg) if cfg.has_functional else None
        self.perceiver = Perceiver(cfg) if cfg.has_functional else None
        self.structural = SignedGraphTransformer(cfg) if cfg.has_structural else None
        self.gate = FusionGate(width=cfg.width) if cfg.mode == "multimodal" else None

    def forward(
        self,
        fmri: torch.Tensor | None = None,
        sc: torch.Tensor | None = None,
        gradients: torch.Tensor | None = None,
        *,
        attention: bool | str | Iterable[str] | None = None,
        region_mask: torch.Tensor | None = None,
        time_mask: torch.Tensor | None = None,
        entry_mask: torch.Tensor | None = None,
        edge_mask: torch.Tensor | None = None,
        perceiver_method: str = "fast",
    ) -> BrainSymphonyOutput:
        """Embed a batch.

        Parameters
        ----------
        fmri : Tensor, shape (B, R, T), optional
            Robust-scaled parcel series; required by the functional mode.
        sc : Tensor, shape (B, R, R), optional
            Signed structural connectome; required by the structural mode. A multimodal model takes either
            or both: with one modality it returns that stream only (``fused`` and ``gates`` are None).
        gradients : Tensor, shape (B, R, G) or (R, G), optional
            Brain gradients for the ``brain_gradient`` positional encoding.
        attention : bool, str or iterable of str, optional
            Maps to return: any of ``"spatial"``, ``"temporal"``, ``"perceiver"``, ``"structural"``,
            or True for all. Without maps the fused attention kernels are used.
        region_mask, time_mask : BoolTensor, shape (B, R) / (B, T), optional
            Pretraining: tokens replaced by the streams' mask embeddings.
        entry_mask : BoolTensor, shape (B, R, T), optional
            Pretraining: series entries replaced by the context path's mask token (all functional paths see
            the masked series).
        edge_mask : BoolTensor, shape (B, R, R), optional
            Pretraining: connectome edges removed from the structural input and attention.
        perceiver_method : {"fast", "explicit"}
            See :meth:`Perceiver.forward`.

        Returns
        -------
        BrainSymphonyOutput
        """
        wanted = self._wanted_maps(attention)
        out = BrainSymphonyOutput()
        if self.gate is not None and fmri is None and sc is None:
            raise ValueError("this multimodal model needs fmri=(B, R, T), sc=(B, R, R), or both")
        functional = self.functional_modules()
        if functional is not None and (fmri is not None or self.gate is None):
            spatial_stream, temporal_stream, context, perceiver = functional
            fmri = self._check_input("fmri", fmri, (self.config.n_regions, self.config.n_timepoints))
            series = context.masked_series(fmri, entry_mask)
            spatial = spatial_stream(
                series, gradients=gradients, region_mask=region_mask, need_weights="spatial" in wanted
            )
            temporal = temporal_stream(series, time_mask=time_mask, need_weights="temporal" in wanted)
            distilled = perceiver(
                spatial.embeddings,
                temporal.embeddings,
                series,
                context.conv1d,
                spatial.positional,
                need_weights="perceiver" in wanted,
                method=perceiver_method,
            )
            out.functional = distilled.latents
            out.reconstruction = distilled.reconstruction
            out.region_embeddings = spatial.embeddings
            out.time_embeddings = temporal.embeddings
            out.spatial_attention = spatial.attention
            out.temporal_attention = temporal.attention
            out.perceiver_region_attention = distilled.region_attention
            out.perceiver_time_attention = distilled.time_attention
        if self.structural is not None and (sc is not None or self.gate is None):
            sc = self._check_input("sc", sc, (self.config.n_regions, self.config.n_regions))
            structural = self.structural(sc, edge_mask=edge_mask, need_weights="structural" in wanted)
            out.structural = structural.embeddings
            out.structural_attention = structural.attention
        if self.gate is not None and out.functional is not None and out.structural is not None:
            out.fused, out.gates = self.gate(out.functional, out.structural)
        return out

    def functional_modules(self) -> tuple[SpatialStream, TemporalStream, ContextPath, Perceiver] | None:
        """The spatial and temporal streams, the context path and the Perceiver (built together), or None."""
        if self.spatial is None or self.temporal is None or self.context is None or self.perceiver is None:
            return None
        return self.spatial, self.temporal, self.context, self.perceiver

    def _wanted_maps(self, attention: bool | str | Iterable[str] | None) -> set[str]:
        if attention is None or attention is False:
            return set()
        if attention is True:
            return set(ATTENTION_MAPS)
        wanted = {attention} if isinstance(attention, str) else set(attention)
        unknown = wanted - set(ATTENTION_MAPS)
        if unknown:
            raise ValueError(f"unknown attention map(s) {sorted(unknown)}; choose from {ATTENTION_MAPS}")
        return wanted

    def _check_input(self, name: str, value: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        """``value`` if it is a (B, shape[0], shape[1]) batch, else a ValueError naming the expected shape."""
        if value is None:
            raise ValueError(f"this {self.config.mode} model needs {name}=(B, {shape[0]}, {shape[1]})")
        if value.dim() != 3 or tuple(value.shape[1:]) != shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}; this model expects (B, {shape[0]}, {shape[1]})"
                f" (n_regions={self.config.n_regions}, n_timepoints={self.config.n_timepoints})"
            )
        return value
