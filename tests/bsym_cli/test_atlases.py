"""Atlas datasets: writing, resolving along the search path, template checks, labels fingerprint."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bsym_cli.bids.atlases import (
    copy_atlas_dataset,
    labels_sha256,
    read_labels_table,
    resolve_atlas,
    write_atlas_dataset,
)
from bsym_cli.utils.errors import ExitCode, InputDataError, MissingInputError, OptionError


def _atlas(root: Path, label: str = "Toy", template: str = "MNI152NLin6Asym", res: str | None = "02") -> Path:
    data = np.zeros((7, 8, 9), np.int16)
    data[1:3, 1:4, 2:5] = 3
    data[4:6, 2:7, 1:8] = 1
    table = pd.DataFrame({"index": [3, 1], "name": ["right_thing", "left_thing"], "network": ["B", "A"]})
    return write_atlas_dataset(
        root,
        atlas=label,
        template=template,
        dseg_img=nib.Nifti1Image(data, np.eye(4)),
        table=table,
        res=res,
        description="toy atlas",
    )


def test_write_then_resolve_sorts_labels_and_finds_images(tmp_path: Path):
    image = _atlas(tmp_path / "atlases")
    assert image == tmp_path / "atlases/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_atlas-Toy_res-02_dseg.nii.gz"
    atlas = resolve_atlas("Toy", atlas_dataset=tmp_path / "atlases")
    assert atlas.indices == [1, 3] and atlas.names == ["left_thing", "right_thing"] and atlas.networks == ["A", "B"]
    assert atlas.image_for("MNI152NLin6Asym") == image
    assert atlas.labels_sha256 == labels_sha256([1, 3], ["left_thing", "right_thing"])
    assert atlas.labels_sha256 != labels_sha256([1, 3], ["right_thing", "left_thing"])
    with pytest.raises(OptionError, match="--force-atlas-space") as info:
        atlas.image_for("MNI152NLin2009cAsym")
    assert info.value.code == ExitCode.BAD_OPTION
    assert atlas.image_for("MNI152NLin2009cAsym", force=True) == image


def test_search_order_flag_then_environment(tmp_path: Path, monkeypatch):
    _atlas(tmp_path / "env", res="1")
    _atlas(tmp_path / "flag", res="2")
    monkeypatch.setenv("BSYM_ATLAS_DIR", str(tmp_path / "env"))
    assert resolve_atlas("Toy").root == tmp_path / "env"
    assert resolve_atlas("Toy", atlas_dataset=tmp_path / "flag").root == tmp_path / "flag"


def test_missing_atlas_exits_66_and_lists_needed_files(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("BSYM_ATLAS_DIR", raising=False)
    monkeypatch.setenv("BSYM_BAKED_ATLAS_DIR", str(tmp_path / "none"))
    with pytest.raises(MissingInputError) as info:
        resolve_atlas("Schaefer400Tian450")
    message = str(info.value)
    assert info.value.code == ExitCode.MISSING_INPUT
    assert "tpl-<T>_atlas-Schaefer400Tian450_dseg.tsv" in message and "bsym demo" in message


def test_labels_table_problems_name_the_file(tmp_path: Path):
    bad = tmp_path / "t.tsv"
    bad.write_text("idx\tname\n1\ta\n")
    with pytest.raises(InputDataError, match=r"t\.tsv.*'index'"):
        read_labels_table(bad)
    bad.write_text("index\tname\n1\ta\n1\tb\n")
    with pytest.raises(InputDataError, match="index 1 appears twice"):
        read_labels_table(bad)


def test_copy_into_sourcedata_keeps_every_template(tmp_path: Path):
    _atlas(tmp_path / "a")
    _atlas(tmp_path / "a", template="MNI152NLin2009cAsym", res=None)
    out = copy_atlas_dataset(resolve_atlas("Toy", atlas_dataset=tmp_path / "a"), tmp_path / "out/sourcedata/atlases")
    again = resolve_atlas("Toy", atlas_dataset=out)
    assert sorted(again.images) == ["MNI152NLin2009cAsym", "MNI152NLin6Asym"]
    assert again.labels_sha256 == resolve_atlas("Toy", atlas_dataset=tmp_path / "a").labels_sha256
    assert (out / "dataset_description.json").exists()


def test_schaefer_comes_from_templateflow_when_no_atlas_dataset_has_it(tmp_path: Path, monkeypatch):
    # The session's TEMPLATEFLOW_HOME holds Schaefer-400 7 networks under TemplateFlow's names (tests/conftest.py).
    monkeypatch.delenv("BSYM_ATLAS_DIR", raising=False)
    monkeypatch.setenv("BSYM_BAKED_ATLAS_DIR", str(tmp_path / "none"))
    atlas = resolve_atlas("Schaefer400Parcels7Networks")
    assert atlas.images["MNI152NLin6Asym"]["01"].name == (
        "tpl-MNI152NLin6Asym_res-01_atlas-Schaefer2018_desc-400Parcels7Networks_dseg.nii.gz"
    )
    assert atlas.indices == list(range(1, 401))
    assert (atlas.names[0], atlas.networks[0], atlas.networks[-1]) == ("7Networks_LH_Vis_1", "Vis", "Default")
    # An atlas dataset with that label still comes first; the copy in sourcedata resolves to the same labels.
    copied = copy_atlas_dataset(atlas, tmp_path / "out/sourcedata/atlases")
    assert resolve_atlas("Schaefer400Parcels7Networks", atlas_dataset=copied).root == copied
    assert resolve_atlas("Schaefer400Parcels7Networks", atlas_dataset=copied).labels_sha256 == atlas.labels_sha256
    assert "TemplateFlow's tpl-MNI152NLin6Asym" in (copied / "README.md").read_text()


def test_a_templateflow_atlas_not_fetched_exits_66_saying_how_to_fetch_it(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("BSYM_ATLAS_DIR", raising=False)
    monkeypatch.setenv("BSYM_BAKED_ATLAS_DIR", str(tmp_path / "none"))
    with pytest.raises(MissingInputError) as info:
        resolve_atlas("Schaefer200Parcels17Networks")  # listed by TemplateFlow's skeleton, never fetched here
    message = str(info.value)
    assert info.value.code == ExitCode.MISSING_INPUT
    assert "atlas-Schaefer2018_desc-200Parcels17Networks" in message and "has not been fetched" in message
    assert "bsym templates" in message
    with pytest.raises(MissingInputError, match="searched: .*TemplateFlow"):
        resolve_atlas("Schaefer400Parcels9Networks")  # no such parcellation: the usual message


def test_templates_command_lays_out_the_wheel_files_and_checks_atlas_labels():
    from click.testing import CliRunner

    from bsym_cli.commands.templates import schaefer_files, templates

    result = CliRunner().invoke(templates, ["--from-wheels"])
    assert result.exit_code == 0, result.output
    assert "tpl-MNI152NLin6Asym_res-01_atlas-Schaefer2018_desc-400Parcels7Networks_dseg.nii.gz" in result.output
    assert "tpl-MNI152NLin6Asym_atlas-Schaefer2018_desc-400Parcels7Networks_dseg.tsv" in result.output
    query = {"atlas": "Schaefer2018", "desc": "100Parcels17Networks"}
    assert schaefer_files("Schaefer100Parcels17Networks") == [
        ("MNI152NLin6Asym", query),
        ("MNI152NLin2009cAsym", query),
    ]
    with pytest.raises(OptionError, match="Schaefer<N>Parcels<K>Networks"):
        schaefer_files("Schaefer400")
