"""Reconstruction and tracking on the crossing phantom: the strongest edges are the planted bundles."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.data import default_sphere
from dipy.reconst.shm import sh_to_sf

import pipelines.dmri.track as track_module
from pipelines.dmri.connectome import count_connectome
from pipelines.dmri.reconstruct import fit_fods
from pipelines.dmri.track import (
    TrackingParameters,
    load_streamlines,
    pmf_table,
    save_streamlines,
    track,
    white_matter_seeds,
)
from simulation.phantom import crossing_phantom


@pytest.fixture(scope="module")
def phantom():
    return crossing_phantom()


@pytest.fixture(scope="module")
def csd(phantom):
    return fit_fods(phantom.dwi, gradient_table(phantom.bvals, bvecs=phantom.bvecs), phantom.mask)


def _top_pairs(counts, labels, k):
    upper = np.triu(counts, 1)
    order = np.argsort(upper, axis=None)[::-1][:k]
    return {tuple(sorted((labels[i], labels[j]))) for i, j in zip(*np.unravel_index(order, counts.shape), strict=True)}


def test_csd_order_follows_the_30_directions(csd):
    assert csd.model == "csd"
    assert csd.sh_order == 6
    assert csd.sh.shape == (23, 19, 15, 28)
    # response from the bundles: axial diffusivity near the simulated 1.7e-3 mm^2/s
    assert 1.4e-3 < csd.response[0] < 1.9e-3


def test_strongest_edges_are_the_planted_bundles(phantom, csd):
    result = track(csd, phantom.mask, phantom.affine, TrackingParameters(n_streamlines=1500, seed=7))
    assert len(result.streamlines) == 1500 and result.complete
    counts = count_connectome(result.streamlines, nib.Nifti1Image(phantom.atlas, phantom.affine), phantom.labels)
    assert _top_pairs(counts, phantom.labels, 3) == set(phantom.planted_pairs)
    planted = [counts[phantom.labels.index(a), phantom.labels.index(b)] for a, b in phantom.planted_pairs]
    off_target = np.triu(counts, 1).sum() - sum(planted)
    assert min(planted) > 10 * max(off_target, 1)
    assert counts[:, phantom.labels.index(21)].sum() == 0  # the decoy parcel has no bundle


def test_pmf_table_is_the_fod_on_the_sphere_clipped_at_zero_inside_the_mask(phantom, csd):
    table = pmf_table(csd.sh, phantom.mask)
    expected = sh_to_sf(csd.sh.astype(float), default_sphere, sh_order_max=csd.sh_order)
    assert table.shape == (*phantom.mask.shape, len(default_sphere.vertices))
    np.testing.assert_allclose(table[phantom.mask], np.clip(expected[phantom.mask], 0, None), atol=1e-9)
    assert not table[~phantom.mask].any()
    assert (expected[phantom.mask] < 0).any()  # the clipping is tested, not vacuous


@pytest.mark.parametrize("budget, kind", [(None, "table"), (0, "sh")])
def test_tracking_reads_the_pmf_table_unless_it_exceeds_the_budget(phantom, csd, monkeypatch, budget, kind):
    if budget is not None:
        monkeypatch.setattr(track_module, "PMF_TABLE_MAX_BYTES", budget)
    result = track(csd, phantom.mask, phantom.affine, TrackingParameters(n_streamlines=600, seed=3))
    assert result.pmf == kind and result.complete
    counts = count_connectome(result.streamlines, nib.Nifti1Image(phantom.atlas, phantom.affine), phantom.labels)
    assert _top_pairs(counts, phantom.labels, 3) == set(phantom.planted_pairs)


def test_tracking_a_brain_smaller_than_its_volume_stays_in_the_brain(phantom, csd):
    """The tracker works on the brain's bounding box; streamlines are in the world mm of the full volume."""
    padded = 6
    grow = [(padded, padded)] * 3
    shift = np.array(phantom.affine, dtype=float)
    shift[:3, 3] -= shift[:3, :3] @ np.full(3, padded)
    fit = replace(csd, sh=np.pad(csd.sh, [*grow, (0, 0)]), fa=np.pad(csd.fa, grow))
    mask = np.pad(phantom.mask, grow)
    result = track(fit, mask, shift, TrackingParameters(n_streamlines=400, seed=9))
    atlas = nib.Nifti1Image(np.pad(phantom.atlas, grow), shift)
    counts = count_connectome(result.streamlines, atlas, phantom.labels)
    assert _top_pairs(counts, phantom.labels, 3) == set(phantom.planted_pairs)
    inverse = np.linalg.inv(shift)
    voxels = np.rint(result.streamlines.get_data() @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    inside = (voxels >= 0).all(1) & (voxels < mask.shape).all(1)
    assert inside.all() and mask[tuple(voxels.T)].mean() > 0.95


def test_tensor_peaks_fallback_with_12_directions_still_finds_the_single_bundle(phantom):
    few = np.r_[np.arange(2), 2 + np.arange(0, 30, 30 / 12).astype(int)]
    gtab = gradient_table(phantom.bvals[few], bvecs=phantom.bvecs[few])
    fit = fit_fods(phantom.dwi[..., few], gtab, phantom.mask)
    assert fit.model == "tensor-peaks"
    result = track(fit, phantom.mask, phantom.affine, TrackingParameters(n_streamlines=800, seed=1))
    counts = count_connectome(result.streamlines, nib.Nifti1Image(phantom.atlas, phantom.affine), phantom.labels)
    # bundle C (11 <-> 20) crosses nothing, so one fibre per voxel is enough for it
    assert (11, 20) in _top_pairs(counts, phantom.labels, 1)


def test_same_seed_same_streamlines_whatever_the_thread_count(phantom, csd):
    params = TrackingParameters(n_streamlines=400, seed=11)
    one = track(csd, phantom.mask, phantom.affine, params, omp_nthreads=1).streamlines
    two = track(csd, phantom.mask, phantom.affine, params, omp_nthreads=2).streamlines
    other = track(csd, phantom.mask, phantom.affine, TrackingParameters(n_streamlines=400, seed=12)).streamlines
    assert len(one) == len(two) == 400
    np.testing.assert_array_equal(one.get_data(), two.get_data())
    assert one.get_data().shape != other.get_data().shape or not np.array_equal(one.get_data(), other.get_data())


def test_seeds_fill_white_matter_voxels_at_the_density(phantom, csd):
    seeds = white_matter_seeds(csd.fa, phantom.mask, phantom.affine, fa_threshold=0.2, density=1.5, seed=0)
    n_wm = int((phantom.mask & (csd.fa > 0.2)).sum())
    assert len(seeds) == round(1.5 * n_wm)
    inverse = np.linalg.inv(phantom.affine)
    voxels = np.rint(seeds @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    assert (csd.fa[tuple(voxels.T)] > 0.2).all()


def test_streamline_file_round_trip(tmp_path, phantom, csd):
    lines = track(csd, phantom.mask, phantom.affine, TrackingParameters(n_streamlines=50, seed=2)).streamlines
    back = load_streamlines(save_streamlines(lines, tmp_path / "s.npz"))
    assert [len(s) for s in back] == [len(s) for s in lines]
    np.testing.assert_allclose(back.get_data(), lines.get_data(), atol=1e-5)


def test_threaded_fit_equals_the_serial_fit():
    small = crossing_phantom(shape=(13, 11, 9))
    gtab = gradient_table(small.bvals, bvecs=small.bvecs)
    serial = fit_fods(small.dwi, gtab, small.mask)
    threaded = fit_fods(small.dwi, gtab, small.mask, n_jobs=2)
    np.testing.assert_array_equal(threaded.sh, serial.sh)
    np.testing.assert_array_equal(threaded.fa, serial.fa)
    assert np.abs(serial.sh).max() > 0


def test_fods_fitted_only_where_tracking_reads_them_give_the_same_streamlines(phantom, csd):
    """Tracking reads FODs within one voxel of FA >= min(seed FA, stop FA) only; the rest need no CSD fit."""
    params = TrackingParameters(n_streamlines=1500, seed=3)
    gtab = gradient_table(phantom.bvals, bvecs=phantom.bvecs)
    near_tracts = fit_fods(phantom.dwi, gtab, phantom.mask, min_fa=min(params.stop_fa, params.fa_threshold))
    skipped = phantom.mask & ~near_tracts.sh.any(-1)
    assert skipped.sum() > 0.2 * phantom.mask.sum()
    np.testing.assert_array_equal(near_tracts.sh[~skipped], csd.sh[~skipped])
    np.testing.assert_array_equal(near_tracts.fa, csd.fa)
    everywhere = track(csd, phantom.mask, phantom.affine, params).streamlines
    near = track(near_tracts, phantom.mask, phantom.affine, params).streamlines
    np.testing.assert_array_equal(near.get_data(), everywhere.get_data())
    # a lower stopping FA than the fit assumed is refused: it would read unfitted voxels, and the streamlines change
    lower = replace(params, stop_fa=0.02)
    with pytest.raises(ValueError, match="min_fa"):
        track(near_tracts, phantom.mask, phantom.affine, lower)
    assert near_tracts.min_fa == 0.15
    changed = track(replace(near_tracts, min_fa=0.0), phantom.mask, phantom.affine, lower).streamlines
    reference = track(csd, phantom.mask, phantom.affine, lower).streamlines
    assert not np.array_equal(changed.get_data(), reference.get_data())


def test_endpoints_only_keeps_the_same_ends_and_the_mean_length(phantom, csd):
    params = TrackingParameters(n_streamlines=300, seed=4)
    full = track(csd, phantom.mask, phantom.affine, params)
    ends = track(csd, phantom.mask, phantom.affine, params, endpoints_only=True)
    assert {len(s) for s in ends.streamlines} == {2}
    np.testing.assert_array_equal(np.stack([s[[0, -1]] for s in full.streamlines]), np.stack(list(ends.streamlines)))
    assert ends.mean_length_mm == pytest.approx(full.mean_length_mm)
    # the bundles are 26, 34 and 40 mm long; the 10 mm minimum drops short stubs
    assert 10.0 < full.mean_length_mm < 45.0


_PROGRESS = re.compile(
    r"tracking: (?P<kept>\d+)/(?P<target>\d+) streamlines kept \(\d+%\), (?P<seeds>\d+) seeds tried, "
    r"(?P<rate>\d+) streamlines/s, (?P<left>.+)"
)


def _progress_lines(caplog) -> list[re.Match]:
    messages = [r.getMessage() for r in caplog.records if r.name == "bsym.dmri" and r.levelno == logging.INFO]
    matches = [_PROGRESS.fullmatch(message) for message in messages]
    assert all(matches), messages
    return [m for m in matches if m is not None]


@pytest.fixture
def info_logs(caplog, monkeypatch):
    # the app's setup_logging stops "bsym" from propagating to the root logger, where caplog listens
    monkeypatch.setattr(logging.getLogger("bsym"), "propagate", True)
    caplog.set_level(logging.INFO, logger="bsym.dmri")
    return caplog


def test_progress_at_info_ends_with_the_streamlines_returned(phantom, csd, info_logs, monkeypatch):
    monkeypatch.setattr(track_module, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(track_module, "PROGRESS_SEEDS_PER_THREAD", 64)
    params = TrackingParameters(n_streamlines=400, seed=11)
    result = track(csd, phantom.mask, phantom.affine, params)
    lines = _progress_lines(info_logs)
    assert len(lines) >= 5  # one per piece of 64 seeds, and the last
    last = lines[-1]
    assert int(last["kept"]) == len(result.streamlines) == 400
    assert int(last["target"]) == 400 and int(last["seeds"]) == result.n_seeds
    assert int(last["rate"]) > 0 and last["left"] == "0s left"
    assert any(m["left"].startswith("about ") and m["left"].endswith(" left") for m in lines[:-1])
    kept = [int(m["kept"]) for m in lines]
    seeds = [int(m["seeds"]) for m in lines]
    assert kept == sorted(kept) and seeds == sorted(seeds)
    # tracking in pieces changes nothing: same streamlines, seeds, rounds and mean length as in one piece
    monkeypatch.setattr(track_module, "PROGRESS_SEEDS_PER_THREAD", 100_000)
    whole = track(csd, phantom.mask, phantom.affine, params)
    np.testing.assert_array_equal(whole.streamlines.get_data(), result.streamlines.get_data())
    assert (whole.n_seeds, whole.rounds, whole.mean_length_mm) == (result.n_seeds, result.rounds, result.mean_length_mm)


def test_progress_is_throttled_to_the_interval(phantom, csd, info_logs, monkeypatch):
    monkeypatch.setattr(track_module, "PROGRESS_INTERVAL_S", 3600.0)
    monkeypatch.setattr(track_module, "PROGRESS_SEEDS_PER_THREAD", 64)
    result = track(csd, phantom.mask, phantom.affine, TrackingParameters(n_streamlines=200, seed=5))
    lines = _progress_lines(info_logs)
    assert len(lines) == 1 and int(lines[0]["kept"]) == len(result.streamlines)


def test_durations_read_as_seconds_minutes_hours():
    assert [track_module._duration(s) for s in (0.4, 42, 185, 7620)] == ["<1s", "42s", "3m05s", "2h07m"]
