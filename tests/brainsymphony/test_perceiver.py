"""The Perceiver's fast exact path against the literal cross-attention.

See docs/model.md, "Context path (1-D conv + Perceiver)".
"""

from __future__ import annotations

import pytest
import torch

from brainsymphony import BrainSymphony
from brainsymphony.perceiver import _KeyStream
from tests.brainsymphony import reference
from tests.brainsymphony.key_streams import NEEDS_BUILD, STREAMS, stream_inputs, use_stream
from tests.brainsymphony.tiny import FRAMES, REGIONS, randomise_, tiny_config

TOL = 1e-5


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(("fast", "compiled"), id="fast-compiled", marks=NEEDS_BUILD),
        pytest.param(("fast", "pytorch"), id="fast-pytorch"),
        pytest.param(("explicit", ""), id="explicit"),
    ],
)
def test_cross_attention_and_maps_match_literal_reference(tiny_model, tiny_inputs, method, monkeypatch):
    method, stream = method
    fmri, _ = tiny_inputs
    perceiver = tiny_model.perceiver
    calls = use_stream(perceiver, stream, monkeypatch)
    spatial, temporal, positional = stream_inputs(tiny_model, fmri)
    conv = tiny_model.context.conv1d
    with torch.no_grad():
        expected, full_map = reference.perceiver_cross_attention(
            perceiver, spatial[1], temporal[1], fmri[1], conv, positional[1]
        )
        queries = perceiver._queries(positional)
        core = perceiver._attend_fast if method == "fast" else perceiver._attend_explicit
        attended, region_map, time_map = core(queries, spatial, temporal, fmri, conv, need_weights=True)
        attended = attended.transpose(1, 2).reshape(3, REGIONS, 16)
        latents = perceiver.cross_attn_norm(perceiver.cross_attn.out_proj(attended))
    torch.testing.assert_close(latents[1], expected, atol=TOL, rtol=0)
    assert bool(calls) == (stream == "compiled")
    by_region = full_map.view(REGIONS, REGIONS, FRAMES)
    assert region_map.shape == (3, REGIONS, REGIONS) and time_map.shape == (3, REGIONS, FRAMES)
    torch.testing.assert_close(region_map[1], by_region.sum(-1), atol=TOL, rtol=0)
    torch.testing.assert_close(time_map[1], by_region.sum(1), atol=TOL, rtol=0)


@pytest.mark.parametrize("chunk_elements", [1, 2 * 2 * REGIONS * FRAMES, 3 * 2 * REGIONS * FRAMES, 10**9])
def test_chunk_size_does_not_change_results(tiny_model, tiny_inputs, chunk_elements, monkeypatch):
    fmri, _ = tiny_inputs
    spatial, temporal, positional = stream_inputs(tiny_model, fmri)
    conv = tiny_model.context.conv1d
    perceiver = tiny_model.perceiver
    use_stream(perceiver, "pytorch", monkeypatch)  # chunks are the PyTorch stream's
    with torch.no_grad():
        perceiver.chunk_elements = 10**9  # one chunk: the unchunked softmax
        whole = perceiver(spatial, temporal, fmri, conv, positional, need_weights=True)
        perceiver.chunk_elements = chunk_elements
        fast = perceiver(spatial, temporal, fmri, conv, positional, need_weights=True)
        explicit = perceiver(spatial, temporal, fmri, conv, positional, need_weights=True, method="explicit")
    for out in (fast, explicit):
        torch.testing.assert_close(out.latents, whole.latents, atol=TOL, rtol=0)
        torch.testing.assert_close(out.reconstruction, whole.reconstruction, atol=TOL, rtol=0)
        torch.testing.assert_close(out.region_attention, whole.region_attention, atol=TOL, rtol=0)
        torch.testing.assert_close(out.time_attention, whole.time_attention, atol=TOL, rtol=0)
    assert whole.reconstruction.shape == (3, REGIONS, FRAMES)
    torch.testing.assert_close(whole.region_attention.sum(-1), torch.ones(3, REGIONS))


@pytest.mark.parametrize("stream", STREAMS)
def test_large_scores_move_the_running_shift_without_overflow(tiny_inputs, monkeypatch, stream):
    """Scores of several hundred (exp overflows float32) still give the exact softmax."""
    model = randomise_(BrainSymphony(tiny_config(mode="functional")), seed=11).eval()
    calls = use_stream(model.perceiver, stream, monkeypatch)
    with torch.no_grad():
        model.perceiver.cross_attn.in_proj_weight[:32] *= 40.0  # queries and keys -> scores ~ 1e2..1e3
    fmri, _ = tiny_inputs
    fmri = fmri.clone()
    fmri[:, 4:] *= 6.0  # later regions score higher: later chunks exceed the first chunk's maximum
    spatial, temporal, positional = stream_inputs(model, fmri)
    conv = model.context.conv1d
    perceiver = model.perceiver
    perceiver.chunk_elements = 2 * REGIONS * FRAMES  # one region per chunk
    shifts = []
    exact_max = _KeyStream._chunk_max
    monkeypatch.setattr(_KeyStream, "_chunk_max", lambda self, a, b: shifts.append(a) or exact_max(self, a, b))
    with torch.no_grad():
        queries = perceiver._queries(positional)
        scores_scale = float(queries.abs().amax())
        fast = perceiver(spatial, temporal, fmri, conv, positional, need_weights=True)
        explicit = perceiver(spatial, temporal, fmri, conv, positional, need_weights=True, method="explicit")
    assert scores_scale > 50.0
    assert bool(torch.isfinite(fast.latents).all())
    torch.testing.assert_close(fast.latents, explicit.latents, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.region_attention, explicit.region_attention, atol=1e-4, rtol=0)
    if stream == "pytorch":
        assert len(shifts) > 3  # the first chunk and re-shifts on later chunks (3 subjects)
    else:
        assert calls and not shifts  # one pass, from the bound of the scores


def test_masked_entries_reach_the_perceiver_through_the_mask_token(tiny_model, tiny_inputs):
    fmri, sc = tiny_inputs
    mask = torch.zeros(3, REGIONS, FRAMES, dtype=torch.bool)
    mask[:, 3, 2:6] = True
    changed = fmri.clone()
    changed[:, 3, 2:6] = 100.0  # hidden entries: any value gives the same output
    with torch.no_grad():
        a = tiny_model(fmri=fmri, sc=sc, entry_mask=mask)
        b = tiny_model(fmri=changed, sc=sc, entry_mask=mask)
        c = tiny_model(fmri=fmri, sc=sc, entry_mask=mask, perceiver_method="explicit")
    torch.testing.assert_close(a.functional, b.functional, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.functional, c.functional, atol=TOL, rtol=0)
