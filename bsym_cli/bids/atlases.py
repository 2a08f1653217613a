"""Atlases as BIDS atlas datasets: resolve, check, write.

An atlas dataset (a derivative dataset, in the form XCP-D and BEP038 use) holds, per template, an integer label
image, a labels table and their sidecar::

    <root>/dataset_description.json                    (DatasetType: derivative)
    <root>/atlas-<A>_description.json
    <root>/tpl-<T>/tpl-<T>_atlas-<A>[_res-<r>]_dseg.nii.gz
    <root>/tpl-<T>/tpl-<T>_atlas-<A>_dseg.tsv          (columns index, name[, network])
    <root>/tpl-<T>/tpl-<T>_atlas-<A>_dseg.json

Entities are read in any order, so datasets written with ``res-`` before ``atlas-`` still resolve.

XCP-D's layout (``atlas-<A>/atlas-<A>_space-<T>[_res-<r>]_dseg.nii.gz`` + ``atlas-<A>/atlas-<A>_dseg.tsv``)
is read as well. An atlas is looked up in ``--atlas-dataset``, then ``$BSYM_ATLAS_DIR``, then the copy
baked into the container (``$BSYM_BAKED_ATLAS_DIR``, default ``/opt/bsym/atlases``). Last, the Schaefer
parcellations come from TemplateFlow: ``Schaefer<N>Parcels<K>Networks`` is TemplateFlow's
``atlas-Schaefer2018_desc-<N>Parcels<K>Networks``, in every template of :data:`TEMPLATES` that has it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bsym_cli.utils.errors import InputDataError, MissingInputError, OptionError
from bsym_cli.utils.logs import get_logger
from pipelines.atlas_labels import labels_sha256
from pipelines.atomic import atomic_path, copy_file, locked, write_json, write_text

DEFAULT_ATLAS = "Schaefer400Tian450"
TEMPLATES = ("MNI152NLin6Asym", "MNI152NLin2009cAsym")
_ENTITY = re.compile(r"(?:^|_)(tpl|space|res|atlas)-([a-zA-Z0-9]+)")
#: Atlas labels read from TemplateFlow's Schaefer2018 parcellations (N parcels, K networks).
TEMPLATEFLOW_SCHAEFER = re.compile(r"Schaefer(\d+)Parcels(7|17)Networks")


@dataclass(frozen=True)
class Atlas:
    """A resolved atlas: label images per template and the labels table.

    Attributes
    ----------
    label : str
        The atlas label (BIDS ``atlas-`` entity).
    images : dict of str to dict of str to Path
        ``images[template][res]`` is a dseg image; ``res`` is ``""`` when the file has no ``res-``.
    table : DataFrame
        Columns ``index`` (int), ``name`` (str), ``network`` (str, may be missing), in index order.
    table_file : Path
        The labels TSV it was read from.
    root : Path
        The atlas dataset the atlas came from.
    """

    label: str
    images: dict[str, dict[str, Path]]
    table: pd.DataFrame = field(repr=False)
    table_file: Path
    root: Path

    @property
    def indices(self) -> list[int]:
        """Atlas indices in output order."""
        return [int(i) for i in self.table["index"]]

    @property
    def names(self) -> list[str]:
        """Region names in output order."""
        return [str(n) for n in self.table["name"]]

    @property
    def networks(self) -> list[str] | None:
        """Network of each region, or None when the table has no ``network`` column."""
        return [str(n) for n in self.table["network"]] if "network" in self.table else None

    @property
    def labels_sha256(self) -> str:
        """Hash of the (index, name) list; a weight bundle records it to detect a different atlas."""
        return labels_sha256(self.indices, self.names)

    def image_for(self, template: str, *, force: bool = False) -> Path:
        """The dseg image in ``template`` (finest resolution), or refuse with the fix.

        With ``force`` an image of another template is returned (the MNI152 templates differ by
        a few millimetres; the user takes responsibility).
        """
        if template in self.images:
            return _finest(self.images[template])
        if force and self.images:
            other = sorted(self.images)[0]
            return _finest(self.images[other])
        raise OptionError(
            f"Atlas '{self.label}' ({self.root}) has no image in template {template}; it has "
            f"{', '.join(sorted(self.images)) or 'none'}. Provide "
            f"tpl-{template}_atlas-{self.label}_dseg.nii.gz in the atlas dataset, "
            "or pass --force-atlas-space to use another template's image."
        )


def _finest(by_res: dict[str, Path]) -> Path:
    def key(res: str) -> float:
        try:
            return float(res)
        except ValueError:
            return 0.0

    return by_res[min(by_res, key=key)]


def read_labels_table(path: str | Path) -> pd.DataFrame:
    """Read and check an atlas labels TSV (``index``, ``name``, optional ``network``), sorted by index."""
    path = Path(path)
    table = pd.read_csv(path, sep="\t", dtype={"name": str})
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise InputDataError(
            f"{path}: atlas labels table lacks column(s) {sorted(missing)}; it needs 'index' and 'name' "
            "(and optionally 'network'), tab-separated."
        )
    if table["index"].duplicated().any():
        dup = table.loc[table["index"].duplicated(), "index"].iloc[0]
        raise InputDataError(f"{path}: index {dup} appears twice; every region needs one row.")
    table["index"] = table["index"].astype(int)
    return table.sort_values("index").reset_index(drop=True)


def _scan(root: Path, label: str) -> Atlas | None:
    images: dict[str, dict[str, Path]] = {}
    tables: list[Path] = []
    for path in sorted(root.rglob(f"*atlas-{label}*_dseg.*")):
        name = path.name
        if path.name.startswith(".") or path.is_dir():
            continue
        ents = dict(_ENTITY.findall(name))
        if ents.get("atlas") != label:
            continue
        if name.endswith((".nii.gz", ".nii")):
            template = ents.get("tpl") or ents.get("space")
            if template:
                images.setdefault(template, {})[ents.get("res", "")] = path
        elif name.endswith(".tsv"):
            tables.append(path)
    if not images:
        return None
    if not tables:
        raise MissingInputError(
            f"Atlas '{label}' in {root} has label images but no labels table; add "
            f"tpl-<T>_atlas-{label}_dseg.tsv with columns index, name (and network)."
        )
    table_file = tables[0]
    return Atlas(label=label, images=images, table=read_labels_table(table_file), table_file=table_file, root=root)


def schaefer_network(name: str) -> str:
    """Network of a Schaefer region name (``7Networks_LH_Vis_1`` -> ``Vis``); ``n/a`` for other names."""
    parts = name.split("_")
    return parts[2] if len(parts) > 3 and parts[0].endswith("Networks") else "n/a"


def _from_templateflow(label: str) -> Atlas | None:
    """Atlas ``Schaefer<N>Parcels<K>Networks`` from TemplateFlow; None for other labels or when TemplateFlow
    lists no such file; exit 66 naming a file that TemplateFlow lists but that has not been fetched."""
    from bsym_cli.bids.templates import fetch_hint, fetched

    match = TEMPLATEFLOW_SCHAEFER.fullmatch(label)
    if match is None:
        return None
    query = {"atlas": "Schaefer2018", "desc": f"{match[1]}Parcels{match[2]}Networks", "suffix": "dseg"}
    images: dict[str, dict[str, Path]] = {}
    tables: list[Path] = []
    unfetched: dict[str, Path] = {}
    for template in TEMPLATES:
        present, absent = fetched(template, **query)
        for path in present:
            if path.name.endswith(".tsv"):
                tables.append(path)
            else:
                images.setdefault(template, {})[dict(_ENTITY.findall(path.name)).get("res", "")] = path
        if absent:
            unfetched[template] = absent[0]
    if not (images and tables):
        if unfetched:
            template, path = next(iter(unfetched.items()))
            raise MissingInputError(
                f"Atlas '{label}' is TemplateFlow's {query['atlas']} {query['desc']}, and {path} has not been "
                f"fetched; {fetch_hint(template, query)}."
            )
        return None
    table = pd.read_csv(tables[0], sep="\t").rename(columns={"label": "name"})
    table = table[["index", "name"]].astype({"index": int, "name": str}).sort_values("index", ignore_index=True)
    table["network"] = table["name"].map(schaefer_network)
    return Atlas(label=label, images=images, table=table, table_file=tables[0], root=tables[0].parent)


def check_atlas_labels(atlas: Atlas) -> None:
    """Refuse (exit 65) an atlas image holding labels that its labels table lacks.

    Such a region would be dropped from every output without a word. A row of the table without a voxel
    in an image (a small parcel lost on a coarse grid) is logged: that region is n/a in every participant.
    """
    import nibabel as nib
    import numpy as np

    table = set(atlas.indices)
    for by_res in atlas.images.values():
        for path in by_res.values():
            labels = np.asarray(nib.load(path).dataobj)
            if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
                raise InputDataError(
                    f"{path}: an atlas image must hold integer labels; this one has fractional "
                    "values (was it resampled with interpolation?). Use nearest-neighbour."
                )
            present = set(np.flatnonzero(np.bincount(np.clip(labels.astype(np.int64), 0, None).ravel())).tolist())
            present.discard(0)
            if present - table:
                extra = sorted(present - table)
                raise InputDataError(
                    f"{path}: {len(extra)} label(s) of the image have no row in {atlas.table_file} (first: "
                    f"{extra[:5]}); add a row (index, name) for each, or use the table made for this image."
                )
            if table - present:
                empty = sorted(table - present)
                get_logger().warning(
                    "%s: %d region(s) of %s have no voxel in this image (first: %s); they will be "
                    "n/a in every output made on it.",
                    path,
                    len(empty),
                    atlas.table_file.name,
                    empty[:5],
                )


def atlas_search_path(atlas_dataset: str | Path | None = None) -> list[Path]:
    """Folders searched for atlases, in order (see module docstring)."""
    roots = []
    if atlas_dataset:
        roots.append(Path(atlas_dataset))
    if os.environ.get("BSYM_ATLAS_DIR"):
        roots.append(Path(os.environ["BSYM_ATLAS_DIR"]))
    roots.append(Path(os.environ.get("BSYM_BAKED_ATLAS_DIR", "/opt/bsym/atlases")))
    return roots


def resolve_atlas(label: str = DEFAULT_ATLAS, *, atlas_dataset: str | Path | None = None) -> Atlas:
    """Find atlas ``label`` along :func:`atlas_search_path`; exit 66 with the needed files if absent."""
    roots = atlas_search_path(atlas_dataset)
    if atlas_dataset and not Path(atlas_dataset).is_dir():
        raise MissingInputError(f"--atlas-dataset {atlas_dataset}: no such folder.")
    for root in roots:
        found = _scan(root, label) if root.is_dir() else None
        if found is not None:
            check_atlas_labels(found)
            return found
    found = _from_templateflow(label)
    if found is not None:
        check_atlas_labels(found)
        return found
    searched = ", ".join(str(r) for r in roots) + (", TemplateFlow" if TEMPLATEFLOW_SCHAEFER.fullmatch(label) else "")
    hint = ""
    if label == DEFAULT_ATLAS:
        hint = (
            " The default atlas combines Tian subcortex S3 (indices 1-50) and Schaefer-400 7 networks "
            "(51-450); the container bakes it in, and `bsym demo DIR` writes a demo version to DIR/atlases."
        )
    raise MissingInputError(
        f"Atlas '{label}' not found (searched: {searched}). Needed: "
        f"tpl-<T>/tpl-<T>_atlas-{label}_dseg.nii.gz for T in {', '.join(TEMPLATES)} "
        f"(at least the BOLD's template) and tpl-<T>_atlas-{label}_dseg.tsv "
        f"(index, name, network). Point --atlas-dataset or $BSYM_ATLAS_DIR to a BIDS atlas dataset holding "
        f"them, or use a TemplateFlow Schaefer parcellation (--atlas Schaefer400Parcels7Networks).{hint}"
    )


def write_atlas_dataset(
    root: str | Path,
    *,
    atlas: str,
    template: str,
    dseg_img,
    table: pd.DataFrame,
    res: str | None = None,
    description: str = "",
) -> Path:
    """Write one atlas image and its labels table into a BIDS atlas dataset at ``root``.

    Parameters
    ----------
    root : str or Path
        The atlas dataset folder (created if needed; ``dataset_description.json`` is added once).
    atlas : str
        Atlas label, e.g. ``Schaefer400Tian450``.
    template : str
        Template the image is in, e.g. ``MNI152NLin6Asym``.
    dseg_img : nibabel image or path
        Integer label image, 0 background.
    table : DataFrame
        Columns ``index``, ``name`` and optionally ``network``.
    res : str, optional
        Resolution label (``01``, ``2``...) for the ``res-`` entity.
    description : str
        Free text for the dataset's README (where the atlas comes from, licence).

    Returns
    -------
    Path
        The written dseg image.
    """
    import nibabel as nib

    from bsym_cli import __version__

    root = Path(root)
    folder = root / f"tpl-{template}"
    image_path = folder / (f"tpl-{template}_atlas-{atlas}" + (f"_res-{res}" if res else "") + "_dseg.nii.gz")
    columns = [c for c in ("index", "name", "network") if c in table.columns]
    with locked(root, "atlas"):
        if not (root / "dataset_description.json").exists():
            write_json(
                root / "dataset_description.json",
                {
                    "Name": f"Atlas {atlas}",
                    "BIDSVersion": "1.11.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "bsym-app", "Version": __version__}],
                },
            )
        if not (root / f"atlas-{atlas}_description.json").exists():
            write_json(root / f"atlas-{atlas}_description.json", {"Name": atlas, "Description": description.strip()})
        if description and not (root / "README.md").exists():
            write_text(root / "README.md", description.rstrip() + "\n")
        if isinstance(dseg_img, (str, Path)):
            copy_file(dseg_img, image_path)
        else:
            with atomic_path(image_path) as tmp:
                nib.save(dseg_img, tmp)
        stem = folder / f"tpl-{template}_atlas-{atlas}_dseg"
        with atomic_path(stem.with_suffix(".tsv")) as tmp:
            table[columns].to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        sidecar: dict[str, Any] = {"Description": f"Atlas {atlas} in {template}.", "SpatialReference": template}
        if "network" in columns:
            sidecar["network"] = {"Description": "Network the region belongs to."}
        write_json(stem.with_suffix(".json"), sidecar)
    return image_path


def _copied_description(atlas: Atlas) -> str:
    """README of a copied atlas dataset: the source's own README, or a note naming the source dataset."""
    source = atlas.root / "README.md"
    source_name = f"TemplateFlow's {atlas.root.name}" if atlas.root.name.startswith("tpl-") else f"'{atlas.root.name}'"
    note = (
        f"Atlas {atlas.label} ({len(atlas.indices)} regions) as bsym-app used it, copied from the atlas dataset "
        f"{source_name}. The labels table lists each region's index and name; the sidecar says which "
        "template the images are in."
    )
    return (source.read_text().rstrip() + "\n\n" + note) if source.is_file() else note


def copy_atlas_dataset(atlas: Atlas, out_root: str | Path) -> Path:
    """Copy the atlas used (all templates) into ``out_root`` (e.g. ``OUTPUT_DIR/sourcedata/atlases``)."""
    out_root = Path(out_root)
    for template, by_res in atlas.images.items():
        for res, path in by_res.items():
            write_atlas_dataset(
                out_root,
                atlas=atlas.label,
                template=template,
                dseg_img=path,
                table=atlas.table,
                res=res or None,
                description=_copied_description(atlas),
            )
    return out_root
