"""Build the demo study: raw BIDS, fMRIPrep-like derivatives, the atlas dataset and the ground truth.

Layout written under ``root``::

    bids/                      raw BIDS (T1w, resting-state BOLD, DWI per participant; participants.tsv)
    bids/derivatives/fmriprep/ preprocessed BOLD in MNI152NLin6Asym (4 mm; 2 mm at full size), mask, boldref, confounds
    atlases/                   BIDS atlas dataset with Schaefer400Tian450 (see :mod:`simulation.atlas`)
    truth/                     parcel signals, connectomes, parameters and planted tracts

Randomness: the study's seed gives one stream for study-wide choices (the planted tracts) and one stream per
participant (``SeedSequence(seed).spawn``), so ``sub-01`` is the same whatever ``--participants`` is.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bsym_cli import __version__
from bsym_cli.bids.atlases import write_atlas_dataset
from bsym_cli.utils.errors import OptionError, OutputError
from pipelines.atomic import atomic_path, copy_file, write_json, write_text
from simulation.anatomy import Anatomy, anatomy_on_grid, random_head_pose
from simulation.atlas import ATLAS_LABEL, ATLAS_README, TEMPLATE, DemoAtlas, build_demo_atlas
from simulation.bold import paint_bold
from simulation.confounds import confounds_table, simulate_motion
from simulation.dwi import radial_diffusivity_for_age, simulate_dwi
from simulation.simulate import coupling_for_age, simulate_bold, simulate_connectome
from simulation.tracts import Tract, choose_tracts, tracts_by_group
from simulation.transforms import write_itk_affine_h5

LOGGER = logging.getLogger("bsym.demo")

#: Association tracts that join other parcel pairs in the ``rewired`` group: a planted change of topology
#: (which pairs connect), where age changes only scales (coupling, diffusivity).
REWIRED_TRACTS = 8
#: The demo's two groups, alternating over participants (sub-01 reference, sub-02 rewired, ...).
GROUPS = ("reference", "rewired")
COLUMNS = ["participant_id", "age", "sex", "group"]

T1W_STEP_MM = 2
BIDS_VERSION = "1.10.0"
FMRIPREP_VERSION = "24.1.1"
TASK = "rest"
AGE_RANGE = (20.0, 80.0)
_OWNED = ("bids", "atlases", "truth")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and acquisition settings of a demo study.

    Attributes
    ----------
    participants : int
        Number of participants (labels ``01``, ``02``, ...).
    seed : int
        Random seed; the same seed gives identical files.
    t_r : float
        BOLD repetition time in seconds (0.7-2 s is realistic).
    n_frames : int
        Steady-state BOLD volumes, after the non-steady-state ones.
    n_dummy : int
        Non-steady-state volumes at the start of each run.
    n_directions, n_b0 : int
        DWI scheme: gradient directions at b = 1000 and b0 volumes.
    dwi_snr : float
        SNR of white-matter b0.
    bold_step_mm, dwi_step_mm : int
        Voxel size of the BOLD and DWI grids, in mm (MNI152 grids of FSL's 182 x 218 x 182 mm box).
    """

    participants: int = 8
    seed: int = 0
    t_r: float = 1.0
    n_frames: int = 300
    n_dummy: int = 4
    n_directions: int = 32
    n_b0: int = 6
    dwi_snr: float = 25.0
    bold_step_mm: int = 4
    dwi_step_mm: int = 3

    @classmethod
    def of_size(cls, size: str, **settings) -> DemoSettings:
        """Settings of ``size`` (a key of :data:`SIZES`), with ``settings`` (participants, seed) on top."""
        return cls(**{**SIZES[size], **settings})

    def validate(self) -> None:
        """Refuse settings that cannot make a study, saying which option to change."""
        if not 1 <= self.participants <= 999:
            raise OptionError(f"--participants must be between 1 and 999, got {self.participants}.")
        if not 0.3 <= self.t_r <= 5.0:
            raise OptionError(f"The repetition time must be between 0.3 and 5 s, got {self.t_r}.")
        if self.bold_step_mm not in (1, 2, 3, 4) or self.dwi_step_mm not in (1, 2, 3, 4):
            raise OptionError(f"Grid steps must be 1-4 mm, got {self.bold_step_mm} and {self.dwi_step_mm}.")
        if self.n_frames < 20 or self.n_dummy < 0 or self.n_directions < 6 or self.n_b0 < 1:
            raise OptionError(
                f"Demo sizes too small: n_frames={self.n_frames} (>= 20), n_dummy={self.n_dummy} (>= 0), "
                f"n_directions={self.n_directions} (>= 6), n_b0={self.n_b0} (>= 1)."
            )


#: ``bsym demo --size``: ``small`` runs a participant in a minute or two on 2 cores; ``full`` is an acquisition
#: of real size (2 mm BOLD, 400 volumes at TR 0.8 s; 2 mm DWI, 64 directions + 8 b0) on the MNI152 grid.
SIZES: dict[str, dict] = {
    "small": {},
    "full": {"t_r": 0.8, "n_frames": 400, "bold_step_mm": 2, "dwi_step_mm": 2, "n_directions": 64, "n_b0": 8},
}


@dataclass
class DemoStudy:
    """What :func:`build_demo` wrote.

    Attributes
    ----------
    root : Path
        The study folder.
    participants : DataFrame
        ``participant_id``, ``age``, ``sex``.
    files : list of Path
        Every file written, in order.
    """

    root: Path
    participants: pd.DataFrame
    files: list[Path] = field(default_factory=list)

    @property
    def bids_dir(self) -> Path:
        """Raw BIDS dataset."""
        return self.root / "bids"

    @property
    def fmriprep_dir(self) -> Path:
        """fMRIPrep derivatives."""
        return self.root / "bids" / "derivatives" / "fmriprep"

    @property
    def atlas_dir(self) -> Path:
        """BIDS atlas dataset."""
        return self.root / "atlases"

    @property
    def truth_dir(self) -> Path:
        """Ground truth."""
        return self.root / "truth"


def build_demo(root: str | Path, settings: DemoSettings | None = None, *, overwrite: bool = False) -> DemoStudy:
    """Simulate and write the whole demo study under ``root``.

    Parameters
    ----------
    root : str or Path
        Study folder; ``bids/``, ``atlases/`` and ``truth/`` are created in it.
    settings : DemoSettings, optional
        Sizes and seed (defaults: 8 participants, TR 1 s, 300 + 4 frames, 6 + 32 DWI volumes).
    overwrite : bool
        Replace an existing demo in ``root``; without it an existing one is refused.

    Returns
    -------
    DemoStudy
        Paths, the participants table and the list of written files.
    """
    settings = settings or DemoSettings()
    settings.validate()
    root = Path(root)
    _prepare_root(root, overwrite=overwrite)
    study_seq, *participant_seqs = np.random.SeedSequence(settings.seed).spawn(1 + settings.participants)
    atlas = build_demo_atlas()
    is_thalamus = atlas.table["name"].str.contains("_THA_").to_numpy()
    tracts = choose_tracts(
        atlas.centroids,
        atlas.hemispheres,
        is_thalamus,
        np.random.default_rng(study_seq),
        n_association=24 + REWIRED_TRACTS,
    )
    by_group = tracts_by_group(tracts, REWIRED_TRACTS)
    LOGGER.info(
        "Atlas %s (%d regions); %d planted tracts per participant, %d of them rewired in group %r",
        ATLAS_LABEL,
        len(atlas.table),
        len(by_group["reference"]),
        REWIRED_TRACTS,
        GROUPS[1],
    )
    study = DemoStudy(root=root, participants=pd.DataFrame(columns=COLUMNS))
    study.files.append(write_demo_atlas(study.atlas_dir, atlas))
    rows = []
    # Many small linear-algebra calls: threaded BLAS only contends on small machines.
    with threadpool_limits(limits=1, user_api="blas"):
        for number, seq in enumerate(participant_seqs, start=1):
            label = f"{number:02d}"
            LOGGER.info("Simulating sub-%s (%d/%d)", label, number, settings.participants)
            group = GROUPS[(number - 1) % len(GROUPS)]
            rows.append(
                _write_participant(study, label, group, atlas, by_group[group], settings, np.random.default_rng(seq))
            )
    study.participants = pd.DataFrame(rows, columns=COLUMNS)
    _write_dataset_files(study, atlas, tracts, by_group, settings)
    LOGGER.info("Demo study written to %s (%d files)", root, len(study.files))
    return study


def _prepare_root(root: Path, *, overwrite: bool) -> None:
    existing = [root / name for name in _OWNED if (root / name).exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{root} already holds a demo study ({', '.join(p.name for p in existing)}). "
            "Pass --overwrite to replace it, or choose another folder."
        )
    for path in existing:
        LOGGER.info("Removing %s (--overwrite)", path)
        shutil.rmtree(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the demo folder {root}: {exc}. Choose a writable folder.") from exc


def _save_nifti(
    study: DemoStudy,
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    dtype: type,
    t_r: float | None = None,
    xform_code: int = 1,
) -> Path:
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(data, affine, header)
    image.set_qform(affine, code=xform_code)
    image.set_sform(affine, code=xform_code)
    if t_r is not None:
        image.header.set_zooms((*image.header.get_zooms()[:3], t_r))
        image.header.set_xyzt_units("mm", "sec")
    else:
        image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    study.files.append(path)
    return path


def _json(study: DemoStudy, path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    study.files.append(path)
    return path


def _text(study: DemoStudy, path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    study.files.append(path)
    return path


def _tsv(study: DemoStudy, path: Path, table: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.8g")
    study.files.append(path)
    return path


def _npy(study: DemoStudy, path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    study.files.append(path)
    return path


def _link_or_copy(study: DemoStudy, source: Path, target: Path) -> Path:
    """Hard-link ``target`` to ``source`` (same bytes, no extra disk); copy where links are impossible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target) as tmp:
            os.link(source, tmp)
    except OSError:
        copy_file(source, target)
    study.files.append(target)
    return target


def _write_participant(
    study: DemoStudy,
    label: str,
    group: str,
    atlas: DemoAtlas,
    tracts: list[Tract],
    settings: DemoSettings,
    rng: np.random.Generator,
) -> tuple[str, float, str, str]:
    sub = f"sub-{label}"
    age = round(float(rng.uniform(*AGE_RANGE)), 1)
    sex = str(rng.choice(["F", "M"]))
    n_volumes = settings.n_frames + settings.n_dummy
    t_r = settings.t_r

    pairs = np.array([t.regions for t in tracts], dtype=int)
    sc = simulate_connectome(atlas.centroids, rng, hemispheres=atlas.hemispheres, tract_pairs=pairs)
    coupling = coupling_for_age(age) * float(np.exp(rng.normal(0.0, 0.05)))
    model_noise = float(rng.uniform(0.015, 0.025))
    signals = simulate_bold(sc, t_r=t_r, n_frames=n_volumes, coupling=coupling, rng=rng, noise=model_noise)
    severity = float(rng.uniform(0.3, 1.5))
    motion, jerks = simulate_motion(n_volumes, t_r, rng, severity=severity)
    bold_anatomy = anatomy_on_grid(settings.bold_step_mm)
    indices = atlas.table["index"].to_numpy()
    bold = paint_bold(
        signals, bold_anatomy, indices, t_r=t_r, motion=motion, jerks=jerks, n_dummy=settings.n_dummy, rng=rng
    )
    table, metadata = confounds_table(
        bold,
        motion,
        t_r=t_r,
        brain=bold_anatomy.brain,
        wm=bold_anatomy.wm > 0.9,
        csf=bold_anatomy.csf > 0.5,
        n_dummy=settings.n_dummy,
    )
    _write_func(study, sub, bold, bold_anatomy, table, metadata, settings)

    dwi_anatomy = anatomy_on_grid(settings.dwi_step_mm)
    dwi = simulate_dwi(
        dwi_anatomy,
        tracts,
        age=age,
        rng=rng,
        snr=settings.dwi_snr,
        n_directions=settings.n_directions,
        n_b0=settings.n_b0,
    )
    pose = random_head_pose(rng)
    dwi_affine = pose @ dwi_anatomy.grid.affine
    dwi_dir = study.bids_dir / sub / "dwi"
    _save_nifti(study, dwi_dir / f"{sub}_dwi.nii.gz", dwi.data, dwi_affine, dtype=np.int16)
    _text(study, dwi_dir / f"{sub}_dwi.bval", " ".join(f"{b:g}" for b in dwi.bvals) + "\n")
    _text(
        study, dwi_dir / f"{sub}_dwi.bvec", "\n".join(" ".join(f"{v:.6f}" for v in row) for row in dwi.bvecs.T) + "\n"
    )
    _json(
        study,
        dwi_dir / f"{sub}_dwi.json",
        {
            "RepetitionTime": 3.2,
            "EchoTime": 0.089,
            "PhaseEncodingDirection": "j-",
            "TotalReadoutTime": 0.05,
            "MagneticFieldStrength": 3,
            "Manufacturer": "bsym demo (simulated)",
        },
    )
    _write_t1w(study, sub, pose, rng)

    truth = study.truth_dir
    _npy(study, truth / f"{sub}_timeseries.npy", signals.astype(np.float32))
    _npy(study, truth / f"{sub}_sc.npy", sc.astype(np.float32))
    _json(
        study,
        truth / f"{sub}_params.json",
        {
            "participant_id": sub,
            "age": age,
            "sex": sex,
            "group": group,
            "dwi_tract_indices": [[int(indices[a]), int(indices[b])] for a, b in pairs],
            "coupling": coupling,
            "coupling_for_age": coupling_for_age(age),
            "model_noise": model_noise,
            "RepetitionTime": t_r,
            "n_volumes": n_volumes,
            "NonSteadyStateVolumes": settings.n_dummy,
            "motion_severity": severity,
            "sudden_movement_frames": [int(j) for j in jerks],
            "dwi_head_pose": pose.tolist(),
            "dwi_affine": dwi_affine.tolist(),
            "dwi_mni_affine": dwi_anatomy.grid.affine.tolist(),
            "dwi_radial_diffusivity": radial_diffusivity_for_age(age),
            "dwi_tract_fa": dwi.fa_tract_voxel,
            "dwi_snr": settings.dwi_snr,
            "dwi_tract_voxels": dwi.n_tract_voxels,
            "dwi_crossing_voxels": dwi.n_crossing_voxels,
            "timeseries_rows": "atlas indices 1-450 in order (atlases/ table)",
        },
    )
    return sub, age, sex, group


def _write_func(
    study: DemoStudy,
    sub: str,
    bold: np.ndarray,
    anatomy: Anatomy,
    table: pd.DataFrame,
    metadata: dict,
    settings: DemoSettings,
) -> None:
    t_r = settings.t_r
    affine = anatomy.grid.affine
    prep_dir = study.fmriprep_dir / sub / "func"
    stem = f"{sub}_task-{TASK}_space-{TEMPLATE}_res-{settings.bold_step_mm}"
    preproc = _save_nifti(
        study, prep_dir / f"{stem}_desc-preproc_bold.nii.gz", bold, affine, dtype=np.int16, t_r=t_r, xform_code=4
    )
    raw_name = f"{sub}/func/{sub}_task-{TASK}_bold.nii.gz"
    _json(
        study,
        prep_dir / f"{stem}_desc-preproc_bold.json",
        {"RepetitionTime": t_r, "SkullStripped": True, "TaskName": TASK, "Sources": [f"bids:raw:{raw_name}"]},
    )
    _save_nifti(
        study,
        prep_dir / f"{stem}_desc-brain_mask.nii.gz",
        anatomy.brain.astype(np.uint8),
        affine,
        dtype=np.uint8,
        xform_code=4,
    )
    n_ref = settings.n_dummy or min(20, bold.shape[-1])
    _save_nifti(
        study,
        prep_dir / f"{stem}_boldref.nii.gz",
        bold[..., :n_ref].mean(axis=-1),
        affine,
        dtype=np.float32,
        xform_code=4,
    )
    _tsv(study, prep_dir / f"{sub}_task-{TASK}_desc-confounds_timeseries.tsv", table)
    _json(study, prep_dir / f"{sub}_task-{TASK}_desc-confounds_timeseries.json", metadata)

    raw_dir = study.bids_dir / sub / "func"
    _link_or_copy(study, preproc, study.bids_dir / raw_name)
    _json(
        study,
        raw_dir / f"{sub}_task-{TASK}_bold.json",
        {
            "RepetitionTime": t_r,
            "TaskName": TASK,
            "EchoTime": 0.03,
            "FlipAngle": 52,
            "Manufacturer": "bsym demo (simulated)",
            "Description": "Simulated; the same volumes as the fMRIPrep derivative (already in MNI space).",
        },
    )


def _write_t1w(study: DemoStudy, sub: str, pose: np.ndarray, rng: np.random.Generator) -> None:
    anatomy = anatomy_on_grid(T1W_STEP_MM)
    t1 = anatomy.t1 * (1.0 + 0.02 * rng.standard_normal(anatomy.t1.shape)) * anatomy.brain
    anat_dir = study.bids_dir / sub / "anat"
    raw_t1w = _save_nifti(
        study,
        anat_dir / f"{sub}_T1w.nii.gz",
        np.clip(t1, 0, 32767).astype(np.int16),
        pose @ anatomy.grid.affine,
        dtype=np.int16,
    )
    # fMRIPrep's anatomical outputs: the T1w reference (no resampling: one T1w), its brain mask, and the
    # transform that resamples a template image into T1w space (maps a T1w point to the template point).
    prep_dir = study.fmriprep_dir / sub / "anat"
    _link_or_copy(study, raw_t1w, prep_dir / f"{sub}_desc-preproc_T1w.nii.gz")
    mask_img = prep_dir / f"{sub}_desc-brain_mask.nii.gz"
    _save_nifti(study, mask_img, anatomy.brain.astype(np.uint8), pose @ anatomy.grid.affine, dtype=np.uint8)
    xfm = prep_dir / f"{sub}_from-MNI152NLin6Asym_to-T1w_mode-image_xfm.h5"
    study.files.append(write_itk_affine_h5(xfm, np.linalg.inv(pose)))
    _json(
        study,
        anat_dir / f"{sub}_T1w.json",
        {
            "RepetitionTime": 2.3,
            "EchoTime": 0.00298,
            "InversionTime": 0.9,
            "FlipAngle": 9,
            "Manufacturer": "bsym demo (simulated)",
            "SkullStripped": True,
        },
    )


def _write_dataset_files(
    study: DemoStudy,
    atlas: DemoAtlas,
    tracts: list[Tract],
    by_group: dict[str, list[Tract]],
    settings: DemoSettings,
) -> None:
    generated = {
        "Name": "bsym demo",
        "Version": __version__,
        "Description": f"Simulated study (seed {settings.seed}); see truth/ for the ground truth.",
    }
    bids = study.bids_dir
    _json(
        study,
        bids / "dataset_description.json",
        {
            "Name": "bsym-app demo study (simulated)",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "GeneratedBy": [generated],
        },
    )
    _text(study, bids / "README", _readme(settings))
    _tsv(study, bids / "participants.tsv", study.participants)
    _json(
        study,
        bids / "participants.json",
        {
            "age": {
                "Description": "Age at scan (planted: Hopf coupling falls and white-matter radial "
                "diffusivity rises with age)",
                "Units": "year",
            },
            "sex": {"Description": "Sex (random, no planted effect)", "Levels": {"F": "female", "M": "male"}},
            "group": {
                "Description": f"Simulated group (planted: {REWIRED_TRACTS} white-matter tracts join other parcel "
                "pairs in the rewired group, a change of topology)",
                "Levels": {
                    "reference": "the reference tracts",
                    "rewired": f"{REWIRED_TRACTS} association tracts moved to other parcel pairs",
                },
            },
        },
    )
    _json(
        study,
        study.fmriprep_dir / "dataset_description.json",
        {
            "Name": "fMRIPrep - fMRI PREProcessing workflow (simulated by bsym demo)",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "fMRIPrep",
                    "Version": FMRIPREP_VERSION,
                    "CodeURL": f"https://github.com/nipreps/fmriprep/archive/{FMRIPREP_VERSION}.tar.gz",
                },
                generated,
            ],
            "DatasetLinks": {"raw": "../.."},
        },
    )
    names = atlas.table["name"].tolist()
    indices = atlas.table["index"].tolist()
    _json(
        study,
        study.truth_dir / "dwi_tracts.json",
        {
            "atlas": ATLAS_LABEL,
            "radius_mm": 4.0,
            "space": "MNI152NLin6Asym mm (FSL MNI152 grid)",
            "tracts": [
                {
                    "indices": [indices[a], indices[b]],
                    "names": [names[a], names[b]],
                    "kind": t.kind,
                    "groups": [group for group in GROUPS if any(t is kept for kept in by_group[group])],
                    "length_mm": round(t.length_mm, 1),
                    "control_points_mm": t.control_points.round(2).tolist(),
                }
                for t in tracts
                for a, b in [t.regions]
            ],
        },
    )
    _text(study, study.truth_dir / "README.md", _TRUTH_README)


def _readme(settings: DemoSettings) -> str:
    return (
        "bsym-app demo study (simulated, not real data)\n\n"
        f"{settings.participants} participants made by `bsym demo` (seed {settings.seed}). Each has a T1w "
        f"(2 mm), a resting-state BOLD run (TR {settings.t_r:g} s, {settings.n_dummy} non-steady-state + "
        f"{settings.n_frames} volumes, {settings.bold_step_mm} mm MNI152NLin6Asym grid) and a single-shell DWI "
        f"({settings.n_b0} b0 + {settings.n_directions} directions at b=1000, {settings.dwi_step_mm} mm). Parcel "
        "signals come from a stochastic Hopf network on a distance-rule connectome, convolved with a canonical HRF and "
        "painted into the Schaefer400Tian450 atlas (atlases/; its subcortex is synthetic) with motion, "
        "physiological noise and drift. DWI fibres follow tracts planted between connected parcels. Age "
        "lowers the network coupling and raises white-matter radial diffusivity. Participants alternate "
        f"between two groups; in the rewired group {REWIRED_TRACTS} tracts join other parcel pairs. The raw "
        "BOLD is the same data as the fMRIPrep derivative. Ground truth: ../truth/.\n"
    )


_TRUTH_README = """\
Ground truth of the bsym demo study (not part of any BIDS dataset).

sub-XX_timeseries.npy  float32 (450, n_volumes): parcel signals before painting, rows in atlas index order
                       (1-450), columns = every BOLD volume including the non-steady-state ones.
sub-XX_sc.npy          float32 (450, 450): the structural connectome the simulation used (max 1).
sub-XX_params.json     age, sex, group, the atlas indices of its planted tracts, coupling, noise, TR, motion,
                       DWI head pose (scanner_mm = pose @ mni_mm; the DWI and T1w affines are pose @ their
                       MNI grid affine), diffusivities.
dwi_tracts.json        the planted tracts: atlas indices and names of both ends, kind, the groups that have
                       it, Bezier control points.
"""


def write_demo_atlas(root: str | Path, atlas: DemoAtlas) -> Path:
    """Write the atlas as a BIDS atlas dataset at ``root``.

    Parameters
    ----------
    root : str or Path
        Atlas dataset folder (e.g. ``DIR/atlases``).
    atlas : DemoAtlas
        From :func:`build_demo_atlas`.

    Returns
    -------
    Path
        The written ``tpl-MNI152NLin6Asym_atlas-Schaefer400Tian450_res-01_dseg.nii.gz``.
    """
    return write_atlas_dataset(
        root,
        atlas=ATLAS_LABEL,
        template=TEMPLATE,
        dseg_img=atlas.image,
        table=atlas.table,
        res="01",
        description=ATLAS_README,
    )
