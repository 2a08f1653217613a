"""The analytic work counts behind ``bsym bench model``'s ceiling match the model as implemented."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from brainsymphony import BrainSymphonyConfig, perceiver
from brainsymphony.flops import PUBLISHED_REFERENCE_FLOPS, exponentials, reference_flops, unavoidable_matmul_flops
from tests.brainsymphony.tiny import REGIONS


class _CountExponentials(TorchDispatchMode):
    """Number of exponentials evaluated by aten.exp / aten.exp_ while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten.exp.default, torch.ops.aten.exp_.default):
            self.count += out.numel()
        return out


def test_published_counts_match_the_documented_reference():
    config = BrainSymphonyConfig.published()
    parts = reference_flops(config)
    assert parts["total"] == pytest.approx(PUBLISHED_REFERENCE_FLOPS, rel=0.01)
    # docs/model.md: spatial 1.71 + temporal 0.62 + context 0.06 + Perceiver rest 0.4 + structural 1.73 GFLOP
    assert unavoidable_matmul_flops(config) == pytest.approx(4.52e9, rel=0.01)
    counts = exponentials(config)
    assert counts["perceiver"] == 2 * 450 * 450 * 200 + 2 * 450 * 450  # cross-attention + one latent block
    assert counts["total"] == pytest.approx(92.1e6, rel=0.001)


def test_the_perceiver_stream_evaluates_exactly_the_counted_exponentials(tiny_model, tiny_inputs, monkeypatch):
    """The factorised stream needs one exponential per (query, head, token) and nothing that grows faster.

    Counted on the PyTorch stream; the compiled one makes exactly one exponential per key and query too.
    """
    fmri, sc = tiny_inputs
    config = tiny_model.config
    monkeypatch.setattr(tiny_model.perceiver, "fused_stream", False)
    counter = _CountExponentials()
    run = perceiver._KeyStream.run

    def counted(self, chunk_elements):
        with counter:
            return run(self, chunk_elements)

    monkeypatch.setattr(perceiver._KeyStream, "run", counted)
    with torch.inference_mode():
        tiny_model(fmri=fmri, sc=sc)
    batch, queries = fmri.shape[0], config.perceiver_heads * REGIONS
    latent_block = config.perceiver_blocks * config.perceiver_heads * REGIONS**2
    per_subject_cross = exponentials(config)["perceiver"] - latent_block
    # plus one (region, query) correction of the running shift per subject, when no chunk needed a re-shift
    assert counter.count == batch * (per_subject_cross + REGIONS * queries)
