"""The compiled key stream (brainsymphony/_keystream.c) against a literal float64 softmax and the PyTorch stream.

See docs/model.md, "Context path (1-D conv + Perceiver)".
"""

from __future__ import annotations

import multiprocessing
import shutil
import threading
import time
from queue import Empty

import numpy as np
import pytest
import torch

from brainsymphony import BrainSymphony, BrainSymphonyConfig, fused_stream
from brainsymphony.fused_stream import fused_stream_available, fused_stream_sums, score_bound
from tests.brainsymphony.key_streams import NEEDS_BUILD, stream_inputs, use_stream

FIELDS = ("region_sum", "region_mass", "time_sum", "time_mass", "window_sum")


def _stream_terms(batch: int, regions: int, frames: int, kernel: int, queries: int, *, seed: int, scale: float = 1.0):
    """Random factors of a key stream: qa (B, R, N), qb (B, T, N), qm (B, K, N), windows, 1 / sigma."""
    generator = torch.Generator().manual_seed(seed)
    qa, qb, qm = (torch.randn(batch, rows, queries, generator=generator) * scale for rows in (regions, frames, kernel))
    windows = torch.randn(batch, regions, frames, kernel, generator=generator)
    inv_sigma = torch.rand(batch, regions, frames, generator=generator) + 0.5
    return qa, qb, qm, windows, inv_sigma


def _normalised(sums) -> dict[str, torch.Tensor]:
    """Every sum divided by its query's total mass: what the Perceiver uses, free of the shift."""
    total = sums.region_mass.sum(1, keepdim=True)
    return {name: getattr(sums, name) / total for name in FIELDS}


def _literal(qa, qb, qm, windows, inv_sigma) -> dict[str, torch.Tensor]:
    """The same normalised sums from the literal (B, R, T, N) softmax in float64."""
    qa, qb, qm, windows, inv_sigma = (t.double() for t in (qa, qb, qm, windows, inv_sigma))
    scores = (qa[:, :, None] + qb[:, None] + torch.einsum("brtk,bkn->brtn", windows, qm)) * inv_sigma[..., None]
    p = torch.softmax(scores.flatten(1, 2), dim=1).view_as(scores)  # (B, R, T, N), sums to 1 per query
    p_sigma = p * inv_sigma[..., None]
    return {
        "region_sum": p_sigma.sum(2),
        "region_mass": p.sum(2),
        "time_sum": p_sigma.sum(1),
        "time_mass": p.sum(1),
        "window_sum": torch.einsum("brtn,brtk->bkn", p_sigma, windows),
    }


def test_the_compiled_stream_was_built_where_a_compiler_is():
    """An install with a C compiler builds the extension; this catches a build that fails quietly."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on PATH: the PyTorch stream is the one in use")
    assert fused_stream_available()


@NEEDS_BUILD
@pytest.mark.parametrize(("kernel", "queries"), [(5, 14), (1, 8), (3, 33), (7, 16), (9, 5)])
def test_compiled_sums_match_the_literal_softmax(kernel, queries):
    """Every kernel width (3, 5, 7 have their own register code; others the general loop) and query count
    (padded to the register width)."""
    terms = _stream_terms(2, 6, 13, kernel, queries, seed=kernel)
    with torch.inference_mode():
        found = _normalised(fused_stream_sums(*terms, need_weights=True))
    expected = _literal(*terms)
    for name in FIELDS:  # window sums are signed: their error is relative to the largest
        scale = float(expected[name].abs().max())
        torch.testing.assert_close(found[name].double(), expected[name], rtol=1e-5, atol=1e-6 * scale, msg=name)
    assert found["region_mass"].sum(1).sub(1).abs().max() < 1e-6


@NEEDS_BUILD
def test_compiled_sums_do_not_depend_on_threads_or_register_width(monkeypatch):
    terms = _stream_terms(3, 9, 17, 5, 40, seed=3)
    builds = [fused_stream._keystream]
    try:
        from brainsymphony import _keystream  # the 8-query build, which every CPU runs

        builds.append(_keystream)
    except ImportError:
        pass
    runs = []
    with torch.inference_mode():
        for build in builds:
            monkeypatch.setattr(fused_stream, "_keystream", build)
            for threads in (1, 2, 3):
                monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
                runs.append(fused_stream_sums(*terms, need_weights=True))
    for run in runs[1:]:
        for name in FIELDS:
            assert torch.equal(getattr(run, name), getattr(runs[0], name)), name


@NEEDS_BUILD
def test_a_bound_far_above_the_scores_falls_back_to_the_exact_maximum(monkeypatch):
    """With the bound 300 above the largest score every weight would underflow; the extension notices from the
    totals and streams those columns again from the exact maximum."""
    terms = _stream_terms(2, 5, 11, 5, 16, seed=4, scale=3.0)
    with torch.inference_mode():
        tight = _normalised(fused_stream_sums(*terms, need_weights=True))
        monkeypatch.setattr(fused_stream, "score_bound", lambda *t: score_bound(*t) + 300.0)
        loose = fused_stream_sums(*terms, need_weights=True)
    assert bool((loose.region_mass.sum(1) > 0.5).all())  # relative to the exact maximum: at least that key's 1
    for name, value in _normalised(loose).items():
        scale = float(tight[name].abs().max())
        torch.testing.assert_close(value, tight[name], rtol=1e-5, atol=1e-6 * scale, msg=name)


def test_the_score_bound_holds_and_stays_close_for_the_published_scale():
    terms = _stream_terms(2, 40, 50, 5, 24, seed=5, scale=4.0)
    qa, qb, qm, windows, inv_sigma = terms
    scores = (qa[:, :, None] + qb[:, None] + torch.einsum("brtk,bkn->brtn", windows, qm)) * inv_sigma[..., None]
    largest = scores.amax(dim=(1, 2))
    bound = score_bound(*terms)
    assert bool((bound >= largest - 1e-4).all())
    assert float((bound - largest).max()) < 100.0  # within the range the extension takes without a second pass


@NEEDS_BUILD
def test_bad_buffers_are_refused_naming_the_buffer():
    lanes = fused_stream._keystream.LANES
    qa, qb, qm, windows, inv_sigma = (t.numpy() for t in _stream_terms(1, 3, 4, 5, lanes, seed=6))
    outputs = [np.zeros((1, rows, lanes), np.float32) for rows in (3, 3, 4, 5)]
    shift = np.zeros((1, lanes), np.float32)
    stream = fused_stream._keystream.stream
    with pytest.raises(ValueError, match="windows holds"):
        stream((1, 3, 4, 5, lanes), 0, 1, qa, qb, qm, windows[:, :2].copy(), inv_sigma, shift, *outputs, None)
    with pytest.raises(ValueError, match=f"queries {lanes + 4}"):
        stream((1, 3, 4, 5, lanes + 4), 0, 1, qa, qb, qm, windows, inv_sigma, shift, *outputs, None)
    with pytest.raises(ValueError, match="columns 0..2"):
        stream((1, 3, 4, 5, lanes), 0, 2, qa, qb, qm, windows, inv_sigma, shift, *outputs, None)


@NEEDS_BUILD
def test_the_published_perceiver_gives_the_same_latents_and_maps_with_either_stream(monkeypatch):
    torch.manual_seed(0)
    model = BrainSymphony(BrainSymphonyConfig.published()).eval()
    generator = torch.Generator().manual_seed(7)
    fmri = torch.randn(2, 450, 200, generator=generator)
    spatial, temporal, positional = stream_inputs(model, fmri)
    outputs = {}
    for stream in ("compiled", "pytorch"):
        calls = use_stream(model.perceiver, stream, monkeypatch)
        with torch.inference_mode():
            outputs[stream] = model.perceiver(
                spatial, temporal, fmri, model.context.conv1d, positional, need_weights=True
            )
        assert bool(calls) == (stream == "compiled")
    compiled, pytorch = outputs["compiled"], outputs["pytorch"]
    for name in ("latents", "reconstruction", "region_attention", "time_attention"):
        a, b = getattr(compiled, name), getattr(pytorch, name)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * float(b.abs().max()), msg=name)


def test_training_runs_the_pytorch_stream_with_gradients(tiny_model, tiny_inputs, monkeypatch):
    fmri, _ = tiny_inputs
    calls = use_stream(tiny_model.perceiver, "compiled", monkeypatch)  # allowed, but autograd needs PyTorch
    spatial, temporal, positional = stream_inputs(tiny_model, fmri)
    out = tiny_model.perceiver(spatial, temporal, fmri, tiny_model.context.conv1d, positional)
    out.latents.square().sum().backward()
    assert not calls
    gradient = tiny_model.perceiver.cross_attn.in_proj_weight.grad
    assert gradient is not None and bool(torch.isfinite(gradient).all()) and float(gradient.abs().max()) > 0


def _stream_in_child(terms, queue) -> None:
    with torch.inference_mode():
        queue.put(fused_stream_sums(*terms, need_weights=False).region_sum.numpy().copy())


@NEEDS_BUILD
def test_a_forked_worker_streams_with_threads_of_its_own(monkeypatch):
    """Nipype forks its workers (from a thread of their own, for OpenMP: pipelines/engine.py): the parent's pool
    threads do not exist in the child, which must not wait on them."""
    terms = _stream_terms(2, 300, 200, 5, 32, seed=8)  # milliseconds per thread: the pool starts both threads
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    with torch.inference_mode():
        parent = fused_stream_sums(*terms, need_weights=False).region_sum
    assert len(fused_stream._pools[2]._threads) == 2
    time.sleep(0.5)  # they go idle, as they are long before a workflow forks
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_stream_in_child, args=(terms, queue))
    forker = threading.Thread(target=child.start)
    forker.start()
    forker.join()
    try:
        found = queue.get(timeout=30)  # before joining: the result fills the pipe
    except Empty:
        found = None
    child.join(timeout=10)
    child.kill()
    assert found is not None, "the forked child did not finish its stream"
    assert np.array_equal(found, parent.numpy())
