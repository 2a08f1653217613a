"""Tiny BIDS + fMRIPrep/QSIPrep-like datasets on odd grids (7x8x9), for discovery and CLI tests.

``make_dataset`` writes real NIfTI/TSV/JSON files; ``defects`` plants one problem at a time so every
validation error can be triggered.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

#: fMRIPrep's column names: each signal with its derivative, power and derivative-power variants (what
#: nilearn's presets ask for), FD/DVARS and one cosine regressor.
CONFOUND_COLUMNS = [
    f"{name}{variant}"
    for name in ("global_signal", "csf", "white_matter", "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
    for variant in ("", "_derivative1", "_power2", "_derivative1_power2")
] + ["framewise_displacement", "std_dvars", "dvars", "cosine00"]


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*zooms[:3], 1.0])
    affine[:3, 3] = -np.asarray(data.shape[:3]) * np.asarray(zooms[:3]) / 2
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def make_dataset(
    root: Path,
    *,
    subjects=("01", "02"),
    sessions=(None,),
    tasks=("rest",),
    runs=(None,),
    spaces=("MNI152NLin6Asym",),
    res: str | None = "2",
    shape=(7, 8, 9),
    n_vols: int = 11,
    t_r: float = 2.0,
    dwi: bool = True,
    qsiprep: bool = False,
    fmriprep: bool = True,
    defects: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a raw BIDS dataset at ``root`` with derivatives under ``root/derivatives``.

    ``defects`` maps a subject label to one of ``no-confounds``, ``no-mask``, ``no-tr``, ``3d-bold``,
    ``nan-bold``, ``bval-count``, ``no-bval``.
    """
    rng = np.random.default_rng(seed)
    defects = defects or {}
    root = Path(root)
    _json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.10.0", "DatasetType": "raw"})
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-{s}\t{20 + i}\n" for i, s in enumerate(subjects))
    )
    fmriprep_root = root / "derivatives" / "fmriprep"
    if fmriprep:
        _json(
            fmriprep_root / "dataset_description.json",
            {
                "Name": "fMRIPrep outputs",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.1"}],
            },
        )
    qsiprep_root = root / "derivatives" / "qsiprep"
    if qsiprep:
        _json(
            qsiprep_root / "dataset_description.json",
            {
                "Name": "QSIPrep outputs",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "qsiprep", "Version": "1.0.0"}],
            },
        )
    for subject in subjects:
        defect = defects.get(subject)
        for session in sessions:
            prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "")
            _nifti(
                root / folder / "anat" / f"{prefix}_T1w.nii.gz",
                rng.random((9, 10, 11)).astype(np.float32),
                (1.0, 1.0, 1.0),
            )
            for task in tasks:
                for run in runs:
                    stem = f"{prefix}_task-{task}" + (f"_run-{run}" if run else "")
                    bold = rng.standard_normal((*shape, n_vols)).astype(np.float32) + 100
                    _nifti(root / folder / "func" / f"{stem}_bold.nii.gz", bold, (3.0, 3.0, 3.0, t_r))
                    _json(root / folder / "func" / f"{stem}_bold.json", {"RepetitionTime": t_r, "TaskName": task})
                    if not fmriprep:
                        continue
                    func = fmriprep_root / folder / "func"
                    for space in spaces:
                        sp = f"{stem}_space-{space}" + (f"_res-{res}" if res else "")
                        data = bold.copy()
                        if defect == "3d-bold":
                            data = data[..., 0]
                        if defect == "nan-bold":
                            data[1, 2, 3, 4] = np.nan
                        zooms = (2.0, 2.0, 2.0, t_r) if data.ndim == 4 else (2.0, 2.0, 2.0)
                        _nifti(func / f"{sp}_desc-preproc_bold.nii.gz", data, zooms)
                        meta = {"SkullStripped": False}
                        if defect != "no-tr":
                            meta["RepetitionTime"] = t_r
                        _json(func / f"{sp}_desc-preproc_bold.json", meta)
                        if defect != "no-mask":
                            _nifti(func / f"{sp}_desc-brain_mask.nii.gz", np.ones(shape, np.uint8), (2.0, 2.0, 2.0))
                        _nifti(func / f"{sp}_boldref.nii.gz", bold[..., 0], (2.0, 2.0, 2.0))
                    if defect != "no-confounds":
                        table = rng.standard_normal((n_vols, len(CONFOUND_COLUMNS)))
                        lines = ["\t".join(CONFOUND_COLUMNS)]
                        lines += ["\t".join(f"{v:.5f}" for v in row) for row in table]
                        func.mkdir(parents=True, exist_ok=True)
                        (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("\n".join(lines) + "\n")
                        _json(func / f"{stem}_desc-confounds_timeseries.json", {})
            if dwi:
                _write_dwi(root / folder / "dwi", f"{prefix}", rng, defect)
                if qsiprep:
                    qdir = qsiprep_root / folder / "dwi"
                    _write_dwi(qdir, f"{prefix}_space-T1w_desc-preproc", rng, None)
                    _nifti(
                        qdir / f"{prefix}_space-T1w_desc-brain_mask.nii.gz",
                        np.ones((6, 7, 5), np.uint8),
                        (2.0, 2.0, 2.0),
                    )
    return root


def _write_dwi(folder: Path, stem: str, rng, defect: str | None) -> None:
    n_b0, n_dirs = 2, 12
    bvals = np.r_[np.zeros(n_b0), np.full(n_dirs, 1000.0)]
    vecs = rng.standard_normal((n_dirs, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    bvecs = np.r_[np.zeros((n_b0, 3)), vecs]
    data = (rng.random((6, 7, 5, len(bvals))) * 100 + 50).astype(np.float32)
    _nifti(folder / f"{stem}_dwi.nii.gz", data, (2.0, 2.0, 2.0, 1.0))
    if defect == "bval-count":
        bvals = bvals[:-1]
    if defect != "no-bval":
        (folder / f"{stem}_dwi.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (folder / f"{stem}_dwi.bvec").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in bvecs.T) + "\n")
    _json(folder / f"{stem}_dwi.json", {"PhaseEncodingDirection": "j"})
