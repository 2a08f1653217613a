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
