"""The demo study builder and its simulator (``bsym demo``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bsym_cli.commands.demo.study import DemoSettings, build_demo
from bsym_cli.utils.errors import OptionError, OutputError
from simulation.simulate import coupling_for_age, simulate_bold, simulate_connectome

# Small, deliberately unequal sizes: 3 dummy + 50 steady volumes at TR 1.3 s, 2 + 12 DWI volumes.
SMALL = {"t_r": 1.3, "n_frames": 50, "n_dummy": 3, "n_directions": 12, "n_b0": 2}
N_VOLUMES = 53
PREP = "bids/derivatives/fmriprep/sub-{s}/func/sub-{s}_task-rest_space-MNI152NLin6Asym_res-4"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    build_demo(root, DemoSettings(participants=2, seed=3, **SMALL))
    return root


@pytest.fixture(scope="module")
def other_builds(tmp_path_factory) -> dict[str, Path]:
    """One-participant builds with the same seed (3) and another seed (4)."""
    same = tmp_path_factory.mktemp("same")
    other = tmp_path_factory.mktemp("other")
    build_demo(same, DemoSettings(participants=1, seed=3, **SMALL))
    build_demo(other, DemoSettings(participants=1, seed=4, **SMALL))
    return {"same": same, "other": other}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_layout_and_dataset_descriptions(study_dir):
    raw = _read_json(study_dir / "bids/dataset_description.json")
    assert (raw["BIDSVersion"], raw["DatasetType"]) == ("1.10.0", "raw")
    prep = _read_json(study_dir / "bids/derivatives/fmriprep/dataset_description.json")
    assert prep["DatasetType"] == "derivative"
    assert prep["GeneratedBy"][0] == {
        "Name": "fMRIPrep",
        "Version": "24.1.1",
        "CodeURL": prep["GeneratedBy"][0]["CodeURL"],
    }
    participants = pd.read_csv(study_dir / "bids/participants.tsv", sep="\t")
    assert list(participants.columns) == ["participant_id", "age", "sex", "group"]
    assert participants["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert participants["age"].between(20, 80).all()
    assert set(participants["sex"]) <= {"F", "M"}
    assert participants["group"].tolist() == ["reference", "rewired"]
    described = _read_json(study_dir / "bids/participants.json")
    assert set(described) == {"age", "sex", "group"} and set(described["group"]["Levels"]) == {"reference", "rewired"}
    for sub in ("01", "02"):
        for name in (
            f"bids/sub-{sub}/anat/sub-{sub}_T1w.nii.gz",
            f"bids/sub-{sub}/anat/sub-{sub}_T1w.json",
            f"bids/sub-{sub}/func/sub-{sub}_task-rest_bold.nii.gz",
            f"bids/sub-{sub}/dwi/sub-{sub}_dwi.json",
            PREP.format(s=sub) + "_desc-brain_mask.nii.gz",
            PREP.format(s=sub) + "_boldref.nii.gz",
            f"bids/derivatives/fmriprep/sub-{sub}/func/sub-{sub}_task-rest_desc-confounds_timeseries.json",
            f"truth/sub-{sub}_params.json",
        ):
            assert (study_dir / name).is_file(), name


def test_bold_shape_tr_and_sidecars(study_dir):
    img = nib.load(study_dir / (PREP.format(s="01") + "_desc-preproc_bold.nii.gz"))
    assert img.shape == (46, 55, 46, N_VOLUMES)
    assert img.header.get_zooms() == pytest.approx((4.0, 4.0, 4.0, 1.3))
    assert img.affine[:3, 3] == pytest.approx([90.0, -126.0, -72.0])
    side = _read_json(study_dir / (PREP.format(s="01") + "_desc-preproc_bold.json"))
    assert side["RepetitionTime"] == 1.3 and side["SkullStripped"] is True
    raw = _read_json(study_dir / "bids/sub-01/func/sub-01_task-rest_bold.json")
    assert (raw["RepetitionTime"], raw["TaskName"]) == (1.3, "rest")
    mask = np.asarray(nib.load(study_dir / (PREP.format(s="01") + "_desc-brain_mask.nii.gz")).dataobj)
    assert mask.shape == (46, 55, 46)
    assert 25_000 < mask.sum() < 32_000  # ~1.8 l of brain in 64 mm^3 voxels


def test_non_steady_state_volumes_are_brighter(study_dir):
    img = nib.load(study_dir / (PREP.format(s="01") + "_desc-preproc_bold.nii.gz"))
    mask = np.asarray(nib.load(study_dir / (PREP.format(s="01") + "_desc-brain_mask.nii.gz")).dataobj) > 0
    global_signal = img.get_fdata()[mask].mean(axis=0)
    steady = np.median(global_signal[3:])
    assert global_signal[0] / steady == pytest.approx(1.5, abs=0.05)
    assert global_signal[3] / steady == pytest.approx(1.0, abs=0.03)


def test_confounds_load_with_nilearn_strategies(study_dir):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    img = str(study_dir / (PREP.format(s="01") + "_desc-preproc_bold.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simple, simple_mask = load_confounds_strategy(img, denoise_strategy="simple")
        scrub, scrub_mask = load_confounds_strategy(
            img, denoise_strategy="scrubbing", fd_threshold=0.2, std_dvars_threshold=1.5
        )
        compcor, _ = load_confounds_strategy(img, denoise_strategy="compcor")
    assert simple.shape[0] == N_VOLUMES
    assert {"trans_x", "rot_z_derivative1_power2", "csf", "white_matter"} <= set(simple.columns)
    assert simple_mask.tolist() == list(range(3, N_VOLUMES))  # the three planted dummy scans are dropped
    assert scrub_mask[0] >= 3 and len(scrub_mask) < N_VOLUMES - 3
    assert "a_comp_cor_00" in compcor.columns
    table = pd.read_csv(
        img.replace("_space-MNI152NLin6Asym_res-4_desc-preproc_bold.nii.gz", "_desc-confounds_timeseries.tsv"), sep="\t"
    )
    assert table.filter(like="non_steady_state_outlier").shape[1] == 3
    assert np.isnan(table["framewise_displacement"][0]) and (table["framewise_displacement"][1:] >= 0).all()


def test_regressing_confounds_recovers_planted_connectivity():
    from simulation.anatomy import anatomy_on_grid
    from simulation.atlas import build_demo_atlas
    from simulation.bold import paint_bold
    from simulation.confounds import confounds_table, simulate_motion

    atlas, anatomy = build_demo_atlas(), anatomy_on_grid(4)
    rng = np.random.default_rng(5)
    n_dummy, n_volumes = 2, 182
    sc = simulate_connectome(atlas.centroids, rng, hemispheres=atlas.hemispheres)
    truth = simulate_bold(sc, t_r=1.0, n_frames=n_volumes, coupling=0.6, rng=rng)
    motion, jerks = simulate_motion(n_volumes, 1.0, rng, severity=1.5)
    bold = paint_bold(
        truth, anatomy, atlas.table["index"].to_numpy(), t_r=1.0, motion=motion, jerks=jerks, n_dummy=n_dummy, rng=rng
    )
    table, _ = confounds_table(
        bold, motion, t_r=1.0, brain=anatomy.brain, wm=anatomy.wm > 0.9, csf=anatomy.csf > 0.5, n_dummy=n_dummy
    )
    labels = anatomy.labels[anatomy.labels > 0]
    sums = np.zeros((451, n_volumes))
    np.add.at(sums, labels, bold[anatomy.labels > 0])
    parcels = (sums[1:] / np.bincount(labels, minlength=451)[1:, None])[:, n_dummy:]
    columns = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]
    design = np.column_stack([np.ones(n_volumes - n_dummy), table[columns].to_numpy()[n_dummy:]])
    cleaned = parcels - (design @ np.linalg.lstsq(design, parcels.T, rcond=None)[0]).T
    upper = np.triu_indices(450, 1)
    fc_truth = np.corrcoef(truth[:, n_dummy:])[upper]
    match_raw = np.corrcoef(fc_truth, np.corrcoef(parcels)[upper])[0, 1]
    match_clean = np.corrcoef(fc_truth, np.corrcoef(cleaned)[upper])[0, 1]
    assert match_clean > 0.8
    assert match_clean > match_raw + 0.1  # the confounds are real: regressing them out helps


def _tensor_at_tract_middles(study_dir: Path, sub: str, tracts: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Fractional anisotropy and |cos| of the main diffusion direction with each tract, at its middle."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    bvals = np.loadtxt(study_dir / f"bids/{sub}/dwi/{sub}_dwi.bval")
    bvecs = np.loadtxt(study_dir / f"bids/{sub}/dwi/{sub}_dwi.bvec")
    data = nib.load(study_dir / f"bids/{sub}/dwi/{sub}_dwi.nii.gz").get_fdata()
    mni = np.array(_read_json(study_dir / f"truth/{sub}_params.json")["dwi_mni_affine"])
    fit = TensorModel(gradient_table(bvals, bvecs=bvecs.T))
    fa, cosines = [], []
    for tract in tracts:
        p0, p1, p2 = np.array(tract["control_points_mm"])
        middle = 0.25 * p0 + 0.5 * p1 + 0.25 * p2
        ijk = np.rint(np.linalg.solve(mni, [*middle, 1.0])[:3]).astype(int)
        tensor = fit.fit(data[tuple(ijk)])
        direction = tensor.evecs[:, 0] * np.sign(np.diag(mni)[:3])  # voxel axes -> MNI axes
        fa.append(tensor.fa)
        cosines.append(abs(direction @ (p2 - p0)) / np.linalg.norm(p2 - p0))
    return np.array(fa), np.array(cosines)


def test_dwi_scheme_and_fibres_follow_tracts(study_dir):
    bvals = np.loadtxt(study_dir / "bids/sub-01/dwi/sub-01_dwi.bval")
    bvecs = np.loadtxt(study_dir / "bids/sub-01/dwi/sub-01_dwi.bvec")
    assert bvecs.shape == (3, 14) and bvals.tolist().count(0.0) == 2
    assert np.linalg.norm(bvecs[:, bvals > 0], axis=0) == pytest.approx(np.ones(12), abs=1e-5)
    img = nib.load(study_dir / "bids/sub-01/dwi/sub-01_dwi.nii.gz")
    assert img.shape == (61, 73, 61, 14)
    params = _read_json(study_dir / "truth/sub-01_params.json")
    mni = np.array(params["dwi_mni_affine"])
    assert img.affine == pytest.approx(np.array(params["dwi_head_pose"]) @ mni, abs=1e-4)
    assert not np.allclose(img.affine, mni, atol=0.5)  # the head pose moves the image
    tracts = _read_json(study_dir / "truth/dwi_tracts.json")["tracts"]
    own = [t for t in tracts if "reference" in t["groups"]]
    assert len(own) == 40 and sorted(t["indices"] for t in own) == sorted(params["dwi_tract_indices"])
    _, cosines = _tensor_at_tract_middles(study_dir, "sub-01", own)
    assert np.median(cosines) > 0.9


def test_the_rewired_group_has_its_own_tracts_and_not_the_reference_ones(study_dir):
    tracts = _read_json(study_dir / "truth/dwi_tracts.json")["tracts"]
    only = {group: [t for t in tracts if t["groups"] == [group]] for group in ("reference", "rewired")}
    assert len(only["reference"]) == len(only["rewired"]) == 8
    ends = {group: {i for t in found for i in t["indices"]} for group, found in only.items()}
    assert not ends["reference"] & ends["rewired"]  # other pairs of parcels, not one end moved
    fa = {
        (sub, group): _tensor_at_tract_middles(study_dir, sub, found)[0]
        for sub in ("sub-01", "sub-02")
        for group, found in only.items()
    }
    # sub-01 is in the reference group, sub-02 in the rewired one: white matter only along their own tracts.
    assert np.median(fa["sub-01", "reference"]) > np.median(fa["sub-01", "rewired"]) + 0.2
    assert np.median(fa["sub-02", "rewired"]) > np.median(fa["sub-02", "reference"]) + 0.2


def test_atlas_dataset_table(study_dir):
    folder = study_dir / "atlases/tpl-MNI152NLin6Asym"
    table = pd.read_csv(folder / "tpl-MNI152NLin6Asym_atlas-Schaefer400Tian450_dseg.tsv", sep="\t")
    assert table["index"].tolist() == list(range(1, 451))
    assert table.loc[0, "name"] == "SYN-SC_RH_THA_1" and table.loc[49, "name"].startswith("SYN-SC_LH_")
    assert (table["network"][:50] == "Subcortex").all()
    assert table.loc[50, ["name", "network"]].tolist() == ["Schaefer400_LH_Vis_1", "Vis"]
    assert table.loc[449, ["name", "network"]].tolist() == ["Schaefer400_RH_Default_39", "Default"]
    img = nib.load(folder / "tpl-MNI152NLin6Asym_atlas-Schaefer400Tian450_res-01_dseg.nii.gz")
    assert img.shape == (182, 218, 182)
    labels = np.asarray(img.dataobj)
    assert np.array_equal(np.unique(labels), np.arange(451))
    on_bold_grid = np.bincount(labels[::4, ::4, ::4].ravel(), minlength=451)
    assert on_bold_grid[1:].min() >= 1  # every region is seen on the 4 mm BOLD grid


def test_same_seed_gives_identical_data_and_other_seed_differs(study_dir, other_builds):
    same, other = other_builds["same"], other_builds["other"]
    for name in ("truth/sub-01_timeseries.npy", "truth/sub-01_sc.npy"):
        assert np.array_equal(np.load(study_dir / name), np.load(same / name))
        assert not np.allclose(np.load(study_dir / name), np.load(other / name))
    for name in (PREP.format(s="01") + "_desc-preproc_bold.nii.gz", "bids/sub-01/dwi/sub-01_dwi.nii.gz"):
        a, b = (np.asarray(nib.load(root / name).dataobj) for root in (study_dir, same))
        assert np.array_equal(a, b)
    confounds = "bids/derivatives/fmriprep/sub-01/func/sub-01_task-rest_desc-confounds_timeseries.tsv"
    assert (study_dir / confounds).read_bytes() == (same / confounds).read_bytes()
    assert _read_json(study_dir / "truth/sub-01_params.json") == _read_json(same / "truth/sub-01_params.json")
    assert (
        _read_json(other / "truth/sub-01_params.json")["age"]
        != _read_json(study_dir / "truth/sub-01_params.json")["age"]
    )


def test_existing_study_is_refused_without_overwrite(study_dir):
    with pytest.raises(OutputError, match="--overwrite"):
        build_demo(study_dir, DemoSettings(participants=1, **SMALL))


def test_cosine_regressors_match_fmripreps_count():
    from simulation.confounds import cosine_basis

    basis = cosine_basis(304, 1.0)  # floor(2 * 304 s / 128 s) - 1 = 3 regressors
    assert basis.shape == (304, 3)
    assert basis.T @ basis == pytest.approx(np.eye(3), abs=1e-10)
    assert basis.sum(axis=0) == pytest.approx(np.zeros(3), abs=1e-10)
    assert cosine_basis(53, 1.3).shape == (53, 0)


def test_connectome_is_symmetric_sparse_and_keeps_planted_tracts():
    rng = np.random.default_rng(0)
    centroids = rng.uniform(-60, 60, size=(37, 3))
    tracts = np.array([[0, 36], [5, 20]])
    sc = simulate_connectome(centroids, rng, density=0.2, tract_pairs=tracts)
    assert sc.shape == (37, 37) and np.array_equal(sc, sc.T)
    assert np.all(np.diag(sc) == 0) and sc.max() == 1.0
    assert np.count_nonzero(np.triu(sc, 1)) == pytest.approx(0.2 * 37 * 36 / 2, abs=3)
    assert sc[0, 36] > np.quantile(sc[sc > 0], 0.9) and sc[5, 20] > np.quantile(sc[sc > 0], 0.9)


def test_bold_shape_and_coupling_raises_correlation():
    rng = np.random.default_rng(1)
    centroids = rng.uniform(-60, 60, size=(31, 3))
    sc = simulate_connectome(centroids, rng, decay_mm=40.0, density=0.4)
    short = simulate_bold(sc, t_r=0.72, n_frames=11, coupling=0.5, rng=np.random.default_rng(2))
    assert short.shape == (31, 11) and short.dtype == np.float32
    upper = np.triu_indices(31, 1)
    weak, strong = (
        np.corrcoef(simulate_bold(sc, t_r=0.72, n_frames=400, coupling=g, rng=np.random.default_rng(2)))[upper].mean()
        for g in (coupling_for_age(80.0), coupling_for_age(20.0))
    )
    assert coupling_for_age(20.0) == pytest.approx(0.9) and coupling_for_age(80.0) == pytest.approx(0.36)
    assert strong > weak + 0.05


def test_sizes_small_is_the_default_and_full_is_a_real_acquisition():
    assert DemoSettings.of_size("small", participants=3) == DemoSettings(participants=3)
    full = DemoSettings.of_size("full", seed=2)
    assert (full.bold_step_mm, full.dwi_step_mm, full.n_frames, full.n_directions, full.n_b0) == (2, 2, 400, 64, 8)
    with pytest.raises(OptionError, match="Grid steps"):
        DemoSettings(bold_step_mm=5).validate()


@pytest.mark.slow  # one full-size participant: about 1.5 GB of BOLD painted at 2 mm
def test_a_full_size_participant_has_real_grids_and_schemes(tmp_path):
    build_demo(tmp_path, DemoSettings.of_size("full", participants=1))
    prep = tmp_path / "bids/derivatives/fmriprep/sub-01/func"
    bold = nib.load(next(prep.glob("*_res-2_desc-preproc_bold.nii.gz")))
    assert bold.shape == (91, 109, 91, 404) and bold.header.get_zooms() == pytest.approx((2, 2, 2, 0.8))
    dwi = nib.load(tmp_path / "bids/sub-01/dwi/sub-01_dwi.nii.gz")
    assert dwi.shape == (91, 109, 91, 72) and dwi.header.get_zooms()[:3] == pytest.approx((2, 2, 2))
    bvals = np.loadtxt(tmp_path / "bids/sub-01/dwi/sub-01_dwi.bval")
    assert (bvals == 0).sum() == 8 and (bvals > 0).sum() == 64
