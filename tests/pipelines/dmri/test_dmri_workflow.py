"""The whole dMRI workflow: planted edges on the phantom, real small_64D end to end, rerun caching."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe

from pipelines.dmri.track import TrackingParameters
from pipelines.dmri.workflow import OUTPUT_FIELDS, init_dmri_wf
from pipelines.engine import configure_nipype
from pipelines.errors import InputDataError
from tests.data.dmri import write_phantom, write_small_64d


def _run(files, base_dir, *, mask=True, **options):
    configure_nipype(crashdump_dir=base_dir / "crash")
    workflow = init_dmri_wf(
        name="dmri_wf", atlas_dseg=files.atlas, labels=files.labels, names=files.names, registration="none", **options
    )
    workflow.inputs.inputnode.dwi_file = str(files.dwi)
    workflow.inputs.inputnode.bval_file = str(files.bval)
    workflow.inputs.inputnode.bvec_file = str(files.bvec)
    workflow.inputs.inputnode.mask_file = str(files.mask) if (mask and files.mask) else None
    outer = pe.Workflow(name="outer", base_dir=str(base_dir))
    collect = pe.Node(Function(input_names=OUTPUT_FIELDS, output_names=["out"], function=_collect), name="collect")
    outer.connect([(workflow, collect, [(f"outputnode.{field}", field) for field in OUTPUT_FIELDS])])
    graph = outer.run(plugin="Linear")
    (node,) = [node for node in graph.nodes() if node.name == "collect"]
    return SimpleNamespace(**node.result.outputs.out)


def _collect(
    atlas_dwi=None, count_relmat=None, signed_relmat=None, registration_figure=None, tractogram=None, metadata=None
):
    return {
        "atlas_dwi": atlas_dwi,
        "count_relmat": count_relmat,
        "signed_relmat": signed_relmat,
        "registration_figure": registration_figure,
        "tractogram": tractogram,
        "metadata": metadata,
    }


def _relmat(path):
    return pd.read_csv(path, sep="\t", index_col="Node", na_values="n/a", keep_default_na=False)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("phantom"))


@pytest.fixture(scope="module")
def phantom_run(phantom_files, tmp_path_factory):
    base = tmp_path_factory.mktemp("work")
    outputs = _run(phantom_files, base, n_streamlines=1200, seed=5, save_tractogram=True)
    return base, outputs


def test_phantom_connectome_has_its_strongest_edges_at_the_planted_pairs(phantom_run):
    _, outputs = phantom_run
    counts = _relmat(outputs.count_relmat)
    assert list(counts.index) == list(counts.columns) == [f"parcel{v:02d}" for v in (3, 5, 8, 10, 11, 20, 21)]
    values = counts.to_numpy()
    np.testing.assert_array_equal(values, values.T)
    assert np.all(np.diag(values) == 0)
    upper = np.triu(values, 1)
    top3 = {
        tuple(sorted(pair))
        for pair in zip(*np.unravel_index(np.argsort(upper, axis=None)[-3:], upper.shape), strict=True)
    }
    assert top3 == {(0, 1), (2, 3), (4, 5)}  # (3, 5), (8, 10), (11, 20)
    signed = _relmat(outputs.signed_relmat).to_numpy()
    volumes = json.loads(open(outputs.metadata).read())["ParcelVolumes_mm3"]
    np.testing.assert_allclose(signed[0, 1], np.log10(values[0, 1] / ((volumes[0] + volumes[1]) / 2)))
    assert signed[0, 6] == 0.0


def test_metadata_records_transform_seed_and_tracking(phantom_run):
    _, outputs = phantom_run
    meta = json.loads(open(outputs.metadata).read())
    assert meta["SignedTransform"] == "log10_count_per_volume"
    assert meta["StreamlineCount"] == 1200
    assert meta["Seed"] == 5
    defaults = TrackingParameters()
    recorded = meta["Tracking"]
    assert (recorded["StepSizeMm"], recorded["MaxAngleDeg"], recorded["StopFAThreshold"]) == (
        defaults.step_size,
        defaults.max_angle,
        defaults.stop_fa,
    )
    assert meta["Tracking"]["StreamlinesKept"] == 1200 and meta["Tracking"]["Complete"] is True
    assert meta["Tracking"]["PMF"].startswith("FOD clipped at zero, tabulated")
    assert meta["Reconstruction"]["Model"] == "csd" and meta["Reconstruction"]["SHOrder"] == 6
    assert meta["Registration"]["Method"] == "none" and meta["Registration"]["DiceBrain"] is None
    assert meta["MissingParcels"] == []


def test_tractogram_and_registration_figure_are_written(phantom_run):
    from dipy.io.streamline import load_tractogram

    _, outputs = phantom_run
    assert outputs.atlas_dwi.endswith("space-dwi_dseg.nii.gz")
    assert outputs.registration_figure.endswith(".svg")
    tractogram = load_tractogram(outputs.tractogram, "same", bbox_valid_check=False)
    assert len(tractogram.streamlines) == 1200


def test_rerun_with_the_same_base_dir_recomputes_nothing_even_with_more_threads(phantom_files, phantom_run):
    base, outputs = phantom_run
    results = sorted(base.rglob("result_*.pklz"))
    stamps = {path: path.stat().st_mtime_ns for path in [*results, *base.rglob("streamlines.npz")]}
    assert len(results) >= 7
    # a different thread count does not change the result, so it does not invalidate the cache either
    again = _run(phantom_files, base, n_streamlines=1200, seed=5, save_tractogram=True, omp_nthreads=2)
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert again.count_relmat == outputs.count_relmat


def test_real_small_64d_runs_end_to_end_and_is_seed_reproducible(tmp_path):
    files = write_small_64d(tmp_path / "data")
    first = _run(files, tmp_path / "a", n_streamlines=300, seed=3, min_length=4.0)
    second = _run(files, tmp_path / "b", n_streamlines=300, seed=3, min_length=4.0)
    other = _run(files, tmp_path / "c", n_streamlines=300, seed=4, min_length=4.0)
    counts = _relmat(first.count_relmat)
    assert counts.shape == (8, 8)
    assert not counts.isna().any().any()
    assert counts.to_numpy().sum() > 100  # most of the 300 streamlines join two octants
    assert open(first.count_relmat).read() == open(second.count_relmat).read()
    assert open(first.signed_relmat).read() == open(second.signed_relmat).read()
    assert open(first.count_relmat).read() != open(other.count_relmat).read()
    meta = json.loads(open(first.metadata).read())
    assert meta["StreamlineCount"] == 300 and meta["Reconstruction"]["SHOrder"] == 8


def test_bad_gradients_fail_the_workflow_with_the_input_error(phantom_files, tmp_path):
    bvec = tmp_path / "dwi.bvec"
    bvec.write_text("\n".join(phantom_files.bvec.read_text().splitlines()[:2]) + "\n")
    broken = type(phantom_files)(**{**phantom_files.__dict__, "bvec": bvec})
    with pytest.raises(RuntimeError):
        _run(broken, tmp_path / "w", n_streamlines=10)
    crash = "".join(path.read_text() for path in (tmp_path / "w" / "crash").glob("crash-*"))
    assert InputDataError.__name__ in crash and "expected 3 rows" in crash


def test_dwi_without_a_mask_gets_an_otsu_mask_and_still_finds_the_bundles(phantom_files, tmp_path):
    outputs = _run(phantom_files, tmp_path, mask=False, n_streamlines=600, seed=9)
    values = _relmat(outputs.count_relmat).to_numpy()
    upper = np.triu(np.nan_to_num(values), 1)
    top3 = {
        tuple(sorted(pair))
        for pair in zip(*np.unravel_index(np.argsort(upper, axis=None)[-3:], upper.shape), strict=True)
    }
    assert top3 == {(0, 1), (2, 3), (4, 5)}


def test_affine_registration_is_wired_with_the_template_and_needs_one(phantom_files, tmp_path):
    template = tmp_path / "tpl.nii.gz"
    template.write_bytes(phantom_files.atlas.read_bytes())
    workflow = init_dmri_wf(
        atlas_dseg=phantom_files.atlas,
        labels=phantom_files.labels,
        names=phantom_files.names,
        template_file=template,
        registration="syn",
        omp_nthreads=2,
    )
    register = workflow.get_node("register_atlas")
    assert register.inputs.template_file == str(template) and register.inputs.method == "syn"
    assert workflow.get_node("track").n_procs == workflow.get_node("fit_fods").n_procs == 2
    assert workflow.get_node("save_tractogram") is None
    assert "symmetric diffeomorphic" in workflow.__desc__
    with pytest.raises(ValueError, match="needs template_file"):
        init_dmri_wf(atlas_dseg=phantom_files.atlas, labels=phantom_files.labels, names=phantom_files.names)
