"""``bsym bench participant``: a whole participant's stages read from the run, beside the reference tools."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bsym_cli.bids.atlases import resolve_atlas
from bsym_cli.commands.bench.participant import run_participant_bench, top_edge_recall
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from tests.bsym_cli.conftest import _bundle

SMALL = DemoSettings(participants=1, seed=3, n_frames=60, n_dummy=2, n_directions=12, n_b0=2)


def test_top_edge_recall_counts_planted_pairs_among_the_strongest_edges():
    counts = np.zeros((5, 5))
    for (a, b), value in {(0, 1): 9, (2, 3): 8, (1, 4): 7, (0, 2): 1}.items():
        counts[a, b] = counts[b, a] = value
    assert top_edge_recall(counts, {(0, 1), (2, 3)}) == 1.0
    assert top_edge_recall(counts, {(0, 1), (0, 2)}) == 0.5  # (0, 2) is fourth, not in the top two
    assert top_edge_recall(counts, {(3, 4), (0, 3)}) == 0.0


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_demo")
    build_demo(root, SMALL)
    atlas = resolve_atlas("Schaefer400Tian450", atlas_dataset=root / "atlases")
    return root, _bundle(root / "tiny_bundle", atlas)


def test_the_participant_bench_reads_each_steps_time_and_memory_from_the_run(small_demo, tmp_path):
    root, bundle = small_demo
    report = run_participant_bench(
        root, tmp_path / "bench", streamlines=2000, nprocs=1, use_mrtrix=False, app_args=("--weights", str(bundle))
    )
    whole, *steps = report["bsym"]
    assert whole["name"] == "whole participant" and whole["peak_gb"] > 0.3
    names = {s["name"] for s in steps}
    assert {"fmri: parcellate", "dmri: fit_fods", "dmri: track"} <= names, names
    # the resource monitor ran: every Nipype step has its own peak memory, below the whole run's
    monitored = [s for s in steps if "graph" not in s["name"]]
    assert all(0 < s["peak_gb"] <= whole["peak_gb"] * 1.05 for s in monitored), monitored
    # one process (--nprocs 1): before + steps + after add up to the run, less the untimed bookkeeping
    assert 0.8 * whole["wall_s"] <= sum(s["wall_s"] for s in steps) <= 1.01 * whole["wall_s"]
    masker = report["reference"][1]
    assert masker["tool"] == "nilearn NiftiLabelsMasker" and masker["wall_s"] > 0 and masker["peak_gb"] > 0.1
    assert report["reference"][0]["wall_s"] == pytest.approx(masker["wall_s"])
    assert report["ratio"] == pytest.approx(masker["wall_s"] / whole["wall_s"])
    assert report["mrtrix_missing"] == "MRtrix3 skipped (--no-mrtrix)."
    assert 0.0 <= report["planted"]["bsym"] <= 1.0 and "mrtrix" not in report["planted"]


@pytest.mark.skipif(shutil.which("tckgen") is None, reason="MRtrix3 is not installed (apt-get install mrtrix3)")
def test_the_participant_bench_times_the_mrtrix_stages_and_scores_their_connectome(small_demo, tmp_path):
    root, bundle = small_demo
    report = run_participant_bench(
        root, tmp_path / "bench", streamlines=2000, nprocs=1, app_args=("--weights", str(bundle), "--skip", "model")
    )
    mrtrix = [s for s in report["reference"] if s["tool"] == "MRtrix3"]
    assert [s["name"] for s in mrtrix] == [
        "dMRI: denoise",
        "dMRI: brain mask",
        "dMRI: response",
        "dMRI: FODs (CSD)",
        "dMRI: tensor FA seeds",
        "dMRI: tracking (iFOD2)",
        "dMRI: connectome",
    ]
    assert report["reference"][1]["tool"] == "nilearn NiftiLabelsMasker"
    assert all(s["wall_s"] > 0 and s["peak_gb"] > 0 for s in mrtrix)
    assert report["reference"][0]["wall_s"] == pytest.approx(sum(s["wall_s"] for s in report["reference"][1:]))
    # chance puts 40 x 40 / 101,025 = 0.016 of the 40 planted pairs among the 40 strongest edges: a share of 0.0004
    assert report["planted"]["mrtrix"] >= 0.05 and report["planted"]["bsym"] >= 0.05, report["planted"]
