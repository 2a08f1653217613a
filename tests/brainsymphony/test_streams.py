"""Spatial, temporal, context and fusion modules against the naive references of docs/model.md."""

from __future__ import annotations

import pytest
import torch

from brainsymphony import BrainSymphony
from tests.brainsymphony import reference
from tests.brainsymphony.tiny import FRAMES, REGIONS, randomise_, tiny_config

TOL = 1e-5


def test_spatial_stream_matches_reference_with_and_without_maps(tiny_model, tiny_inputs):
    fmri, _ = tiny_inputs
    stream = tiny_model.spatial
    with torch.no_grad():
        fast = stream(fmri)
        explicit = stream(fmri, need_weights=True)
        expected, expected_maps = reference.spatial_stream(fmri[1], stream, heads=2)
    assert fast.embeddings.shape == (3, REGIONS, 16)
    torch.testing.assert_close(fast.embeddings[1], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(explicit.embeddings, fast.embeddings, atol=TOL, rtol=0)
    assert len(explicit.attention) == 2 and explicit.attention[0].shape == (3, 2, REGIONS, REGIONS)
    for layer_map, expected_map in zip(explicit.attention, expected_maps, strict=True):
        torch.testing.assert_close(layer_map[1], expected_map, atol=TOL, rtol=0)
    torch.testing.assert_close(fast.positional[2], stream.pos_enc.pe[0, :REGIONS])


def test_temporal_stream_matches_reference(tiny_model, tiny_inputs):
    fmri, _ = tiny_inputs
    stream = tiny_model.temporal
    with torch.no_grad():
        out = stream(fmri, need_weights=True)
        expected, expected_maps = reference.temporal_stream(fmri[2], stream, heads=2)
    assert out.embeddings.shape == (3, FRAMES, 16)
    torch.testing.assert_close(out.embeddings[2], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(out.attention[1][2], expected_maps[1], atol=TOL, rtol=0)


def test_context_features_and_mask_token(tiny_model, tiny_inputs):
    fmri, _ = tiny_inputs
    context = tiny_model.context
    mask = torch.zeros(3, REGIONS, FRAMES, dtype=torch.bool)
    mask[0, 2, 4] = True
    with torch.no_grad():
        masked = context.masked_series(fmri, mask)
        features = context.features(masked)
        expected = reference.context_features(masked[0], context.conv1d)
    assert float(masked[0, 2, 4]) == pytest.approx(float(context.mask_token.detach()))
    assert float(masked[0, 2, 5]) == float(fmri[0, 2, 5])
    assert features.shape == (3, REGIONS, FRAMES, 6)
    torch.testing.assert_close(features[0], expected, atol=TOL, rtol=0)
    assert context.decode(features).shape == (3, REGIONS, FRAMES)


def test_fusion_gate_matches_reference_and_neutral_gate_averages(tiny_model):
    generator = torch.Generator().manual_seed(5)
    f, s = torch.randn(2, 2, REGIONS, 16, generator=generator)
    with torch.no_grad():
        fused, gates = tiny_model.gate(f, s)
        expected, expected_gates = reference.fusion_gate(f[1], s[1], tiny_model.gate)
        torch.testing.assert_close(fused[1], expected, atol=TOL, rtol=0)
        torch.testing.assert_close(gates[1], expected_gates, atol=TOL, rtol=0)
        tiny_model.gate.neutral_()
        fused, gates = tiny_model.gate(f, s)
    torch.testing.assert_close(fused, (f + s) / 2)
    assert float(gates.min()) == float(gates.max()) == 0.5


def test_mask_tokens_replace_masked_tokens():
    model = randomise_(BrainSymphony(tiny_config(mode="functional", mask_tokens=True)), seed=3).eval()
    fmri = torch.randn(2, REGIONS, FRAMES)
    region_mask = torch.zeros(2, REGIONS, dtype=torch.bool)
    region_mask[1, 3] = True
    other = fmri.clone()
    other[1, 3] += 5.0  # a masked region's series must not reach its own spatial token
    with torch.no_grad():
        a = model.spatial.embedding_layer(fmri)
        first = model.spatial(fmri, region_mask=region_mask).embeddings
        second = model.spatial(other, region_mask=region_mask).embeddings
    assert float((a[1, 3] - model.spatial.mask_token.detach()).abs().max()) > 0.1
    torch.testing.assert_close(first, second, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="mask tokens"):
        BrainSymphony(tiny_config(mode="functional")).spatial(fmri, region_mask=region_mask)
