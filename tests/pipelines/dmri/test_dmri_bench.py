"""``bsym bench tractography`` measurements on the small phantom (MRtrix part only when installed, slow)."""

from __future__ import annotations

import shutil

import pytest

from bsym_cli.commands.bench.tractography import INSTALL_HINT, run_tractography_bench


def test_bench_without_mrtrix_reports_dipy_rates_and_recovers_the_planted_pairs():
    report = run_tractography_bench(streamlines=600, threads=1, size="small", seed=3, use_mrtrix=False)
    dipy = report["dipy"]
    assert dipy["streamlines"] == 600
    assert dipy["streamlines_per_s"] == pytest.approx(600 / dipy["track_s"], rel=0.01)
    assert dipy["s_per_million"] == pytest.approx(1e6 / dipy["streamlines_per_s"], rel=0.01)
    assert dipy["planted_top_fraction"] == 1.0
    assert report["phantom"]["parcels"] == 7
    assert report["mrtrix_missing"] == INSTALL_HINT
    assert "apt-get install mrtrix3" in INSTALL_HINT


@pytest.mark.slow  # MRtrix's dwi2response tournier alone takes ~15 s on the small phantom on 2 cores
@pytest.mark.skipif(shutil.which("tckgen") is None, reason="MRtrix3 (tckgen) is not installed")
def test_bench_with_mrtrix_agrees_on_the_planted_pairs(tmp_path):
    report = run_tractography_bench(streamlines=2000, threads=2, size="small", seed=3, work_dir=tmp_path)
    assert report["mrtrix"]["streamlines"] == 2000
    assert report["mrtrix"]["planted_top_fraction"] == report["dipy"]["planted_top_fraction"] == 1.0
    assert report["spearman"] > 0.5
