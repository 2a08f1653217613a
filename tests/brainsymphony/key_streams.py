"""Helpers for the tests of the Perceiver's two key streams: the compiled pass and the chunked PyTorch one."""

from __future__ import annotations

import pytest
import torch

from brainsymphony import perceiver as perceiver_module
from brainsymphony.fused_stream import fused_stream_available

NOT_BUILT = "brainsymphony._keystream was not built (no C compiler when bsym-app was installed)"
#: Marks a test that calls the compiled stream.
NEEDS_BUILD = pytest.mark.skipif(not fused_stream_available(), reason=NOT_BUILT)
#: Parametrises a test over both streams.
STREAMS = [pytest.param("compiled", marks=NEEDS_BUILD), "pytorch"]


def use_stream(perceiver, stream: str, monkeypatch) -> list:
    """Make ``perceiver`` run ``stream``; returns the list of the compiled stream's calls, to check which ran."""
    calls: list = []
    compiled = perceiver_module.fused_stream_sums
    monkeypatch.setattr(perceiver, "fused_stream", stream == "compiled")
    monkeypatch.setattr(perceiver_module, "fused_stream_sums", lambda *a, **k: calls.append(1) or compiled(*a, **k))
    return calls


def stream_inputs(model, fmri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Perceiver's inputs for ``fmri`` (B, R, T): region tokens (B, R, D), time tokens (B, T, D) and the
    regions' positional encodings."""
    with torch.no_grad():
        spatial = model.spatial(fmri)
        temporal = model.temporal(fmri)
    return spatial.embeddings, temporal.embeddings, spatial.positional
