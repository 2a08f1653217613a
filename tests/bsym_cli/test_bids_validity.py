"""The derivatives validate: bids-validator-deno (pinned, offline) on a demo run's outputs and atlas datasets.

One demo study is run through the real command line (participant level with fMRI, dMRI and the model, then
the group level), from the study folder with relative paths. Validator errors fail; every warning left is
listed in :data:`ACCEPTED_WARNINGS` with the reason it stays.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bsym_cli.bids.atlases import resolve_atlas
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from tests.bsym_cli.conftest import _bundle
from tests.bsym_cli.test_reruns import OUT, RUN, bsym_app

VALIDATOR = Path(sys.executable).with_name("bids-validator-deno")

#: Warnings the outputs keep, and why.
ACCEPTED_WARNINGS = {
    # We cannot name the people who ran the pipeline; the dataset's authors are its users' to add.
    "TOO_FEW_AUTHORS",
    # participants.tsv is copied from the raw dataset unchanged (with its own sidecar); descriptions of its
    # columns belong to that dataset. Other "recommended" keys (e.g. Description of the raw files) likewise.
    "SIDECAR_KEY_RECOMMENDED",
    # The labels table beside the DWI-space atlas has the atlas's own columns (``network``); BIDS defines only
    # index/name for dseg tables, and the sidecar describes the extra column.
    "TSV_ADDITIONAL_COLUMNS_UNDEFINED",
    # An atlas dataset has no subjects by design.
    "SUBJECT_FOLDERS",
    # The DWI-space atlas is named with atlas- but the per-atlas description lives in sourcedata/atlases, which
    # is a dataset of its own; BIDS has no way yet to point from one to the other.
    "ATLAS_DESCRIPTION_RECOMMENDED",
}


def validate(root: Path) -> list[dict]:
    """The validator's issues for the dataset at ``root`` (no network: the schema ships with the validator)."""
    result = subprocess.run(
        [str(VALIDATOR), str(root), "--json"], capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    assert result.stdout, result.stderr[-2000:]
    return json.loads(result.stdout)["issues"]["issues"]


def summary(issues: list[dict], severity: str) -> list[str]:
    return sorted({f"{i['code']} {i.get('location', '')}" for i in issues if i["severity"] == severity})


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A two-participant demo run through both levels, as a user types it from the study folder."""
    root = tmp_path_factory.mktemp("valid") / "study"
    build_demo(root, DemoSettings(participants=2, seed=5, n_frames=60, n_dummy=2, n_directions=12, n_b0=2))
    _bundle(root / "tiny_bundle", resolve_atlas("Schaefer400Tian450", atlas_dataset=root / "atlases"))
    result = bsym_app(root, *RUN)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = bsym_app(root, "bids", str(OUT), "group", "-w", "work", "--weights", "tiny_bundle")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


@pytest.mark.parametrize("dataset", [OUT, OUT / "sourcedata" / "atlases", Path("atlases")])
def test_outputs_and_atlas_datasets_pass_the_bids_validator(study, dataset):
    issues = validate(study / dataset)
    assert summary(issues, "error") == []
    assert {i["code"] for i in issues if i["severity"] == "warning"} <= ACCEPTED_WARNINGS, summary(issues, "warning")


def test_dataset_description_and_sidecars_carry_uris_not_paths(study):
    out = study / OUT
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bsym-app"
    assert [g["Name"] for g in description["GeneratedBy"]][1:] == ["fMRIPrep", "bsym demo"]  # the inputs' chain
    assert description["License"] and "2506.18314" in description["HowToAcknowledge"]
    assert all(uri.startswith("file:///") for uri in description["DatasetLinks"].values())
    assert {s["URL"] for s in description["SourceDatasets"]} == {f"bids:{n}:" for n in description["DatasetLinks"]}
    sidecars = [p for p in out.rglob("*.json") if "/log/" not in p.as_posix()]
    assert len(sidecars) > 10
    for sidecar in sidecars:
        if sidecar.name == "dataset_description.json":
            continue
        text = sidecar.read_text()
        assert str(study) not in text, f"{sidecar} holds an absolute path"
        for source in json.loads(text).get("Sources", []):
            assert source.startswith("bids:"), (sidecar, source)
    model = json.loads((out / "sub-01/model/sub-01_desc-bsym_features.json").read_text())
    assert all(s.startswith("bids::sub-01/") for s in model["Sources"])  # this dataset's own files
    dwi_atlas = next((out / "sub-01" / "dwi").glob("*_space-dwi_*_dseg.json"))
    assert json.loads(dwi_atlas.read_text())["SpatialReference"].startswith("bids:raw:sub-01/dwi/")


def test_citation_names_what_exists_with_versions(study):
    import nipype
    import torch

    logs = study / OUT / "logs"
    text = (logs / "CITATION.md").read_text() + (logs / "CITATION.bib").read_text()
    assert "github.com/bsym-app" not in text and "arXiv:2506.18314" in text
    assert nipype.__version__ in text and torch.__version__.split("+")[0] in text
    assert (logs / "CITATION.bib").read_text().count("@") == 6  # the paper and five libraries


def test_other_settings_into_the_same_output_warn_and_strict_config_refuses(study, tmp_path):
    copy = Path(shutil.copytree(study, tmp_path / "study", symlinks=True))
    description = copy / OUT / "dataset_description.json"
    before = description.read_bytes()
    changed = [a if a != "200" else "300" for a in RUN]  # another --streamlines: other scientific settings
    refused = bsym_app(copy, *changed, "--participant-label", "01", "--skip", "dmri", "model", "--strict-config")
    assert refused.returncode == 64, refused.stderr[-2000:]
    assert "ConfigurationHash" in refused.stderr and "--strict-config" in refused.stderr
    assert description.read_bytes() == before
    warned = bsym_app(copy, *changed, "--participant-label", "01", "--skip", "dmri", "model")
    assert warned.returncode == 0, warned.stderr[-2000:]
    assert "ConfigurationHash" in warned.stderr + warned.stdout
    assert (
        json.loads(description.read_text())["GeneratedBy"][0]["ConfigurationHash"]
        != json.loads(before)["GeneratedBy"][0]["ConfigurationHash"]
    )
