"""Output names, sidecars, atomic writes, concurrent root files, and re-indexing outputs with pybids."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from bsym_cli.bids.derivatives import DerivativesWriter, output_path, pybids_config
from pipelines.atomic import TMP_PREFIX, atomic_path, remove_stale_temporaries

SRC = {"subject": "01", "session": "pre", "task": "rest", "run": 2, "space": "MNI152NLin6Asym", "desc": "preproc"}


@pytest.mark.parametrize(
    "kind, entities, expected",
    [
        (
            "timeseries",
            {"space": "MNI152NLin6Asym", "atlas": "A"},
            "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_space-MNI152NLin6Asym_atlas-A_stat-mean_timeseries.tsv",
        ),
        (
            "relmat",
            {"space": "MNI152NLin6Asym", "atlas": "A"},
            "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_space-MNI152NLin6Asym_atlas-A_stat-pearsoncorrelation"
            "_relmat.tsv",
        ),
        (
            "coverage",
            {"space": "MNI152NLin6Asym", "atlas": "A"},
            "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_space-MNI152NLin6Asym_atlas-A_stat-coverage_bold.tsv",
        ),
        (
            "atlas_dwi",
            {"atlas": "A"},
            "sub-01/ses-pre/dwi/sub-01_ses-pre_task-rest_run-2_space-dwi_atlas-A_dseg.nii.gz",
        ),
        (
            "signed_relmat",
            {"atlas": "A"},
            "sub-01/ses-pre/dwi/sub-01_ses-pre_task-rest_run-2_atlas-A_stat-signedsc_relmat.tsv",
        ),
        (
            "embedding",
            {"atlas": "A", "desc": "fused"},
            "sub-01/ses-pre/model/sub-01_ses-pre_atlas-A_desc-fused_embedding.tsv",
        ),
        ("features", {}, "sub-01/ses-pre/model/sub-01_ses-pre_desc-bsym_features.tsv"),
        (
            "attention_map",
            {"space": "MNI152NLin6Asym", "atlas": "A", "desc": "incomingattention"},
            "sub-01/ses-pre/model/sub-01_ses-pre_space-MNI152NLin6Asym_atlas-A_desc-incomingattention_stat.nii.gz",
        ),
    ],
)
def test_output_names_follow_design(kind, entities, expected):
    assert output_path("/out", kind, SRC, **entities) == Path("/out") / expected


def test_output_names_from_file_names_and_refusals():
    ents = {
        "sub": "07",
        "task": "rest",
        "acq": "mb",
        "run": "01",
        "space": "MNI152NLin2009cAsym",
        "res": "2",
        "desc": "preproc",
    }  # a preprocessed BOLD's entities: those that do not identify the source are dropped
    path = output_path("/o", "timeseries", ents, space="MNI152NLin2009cAsym", atlas="B")
    assert path.name == "sub-07_task-rest_acq-mb_run-01_space-MNI152NLin2009cAsym_atlas-B_stat-mean_timeseries.tsv"
    with pytest.raises(ValueError, match="no subject"):
        output_path("/o", "features", {"task": "rest"})
    with pytest.raises(ValueError, match="unknown entities"):
        output_path("/o", "features", {"sub": "1"}, hemi="L")


def test_writer_sidecar_sources_are_bids_uris(tmp_path: Path):
    raw, fmriprep = tmp_path / "bids", tmp_path / "bids" / "derivatives" / "fmriprep"
    writer = DerivativesWriter(tmp_path / "out", {"raw": raw, "fmriprep": fmriprep})
    src = tmp_path / "table.tsv"
    src.write_text("a\tb\n1\t2\n")
    bold = fmriprep / "sub-01" / "func" / "sub-01_task-rest_desc-preproc_bold.nii.gz"
    path = writer.write(
        "timeseries",
        {"sub": "01", "task": "rest"},
        src_file=src,
        space="MNI152NLin6Asym",
        atlas="A",
        sidecar={"SamplingFrequency": 0.5},
        sources=[bold],
    )
    assert path.read_text() == "a\tb\n1\t2\n"
    meta = json.loads(path.with_name(path.name.replace(".tsv", ".json")).read_text())
    assert meta == {
        "SamplingFrequency": 0.5,
        "Sources": ["bids:fmriprep:sub-01/func/sub-01_task-rest_desc-preproc_bold.nii.gz"],
    }


def test_a_failed_write_leaves_no_file_that_looks_complete(tmp_path: Path):
    target = tmp_path / "sub-02" / "x.tsv"

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    writer = DerivativesWriter(tmp_path, {})
    with pytest.raises(RuntimeError):
        writer.write("features", {"sub": "01"}, writer=crash)
    assert list(tmp_path.rglob("*features*")) == []
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.name.startswith(TMP_PREFIX) and tmp.parent == target.parent
        raise RuntimeError
    assert not target.exists() and list(target.parent.iterdir()) == []
    (target.parent / f"{TMP_PREFIX}abc-x.tsv").write_text("left by kill -9")
    assert len(remove_stale_temporaries(tmp_path)) == 1


def _write_root(args) -> None:
    out, i = args
    writer = DerivativesWriter(out, {"raw": Path("/data/bids"), f"deriv{i}": Path(f"/data/d{i}")})
    for _ in range(5):
        writer.write_dataset_files(config_hash=f"hash{i}", upstream=[{"Name": "fMRIPrep", "Version": "24"}])


def test_eight_concurrent_participants_never_corrupt_root_files(tmp_path: Path):
    with mp.get_context("fork").Pool(8) as pool:
        pool.map(_write_root, [(tmp_path, i) for i in range(8)])
    data = json.loads((tmp_path / "dataset_description.json").read_text())
    assert data["DatasetType"] == "derivative" and data["GeneratedBy"][0]["Name"] == "bsym-app"
    assert data["GeneratedBy"][1:] == [{"Name": "fMRIPrep", "Version": "24"}]
    assert set(data["DatasetLinks"]) == {"raw"} | {f"deriv{i}" for i in range(8)}  # every writer's update kept
    assert (tmp_path / ".bidsignore").read_text().count("*_relmat.tsv") == 1
    assert (tmp_path / "logs" / "CITATION.md").exists()
    assert not list(tmp_path.rglob(f"{TMP_PREFIX}*"))


def test_pybids_indexes_and_queries_the_outputs(tmp_path: Path):
    from bids import BIDSLayout

    writer = DerivativesWriter(tmp_path, {"raw": tmp_path})
    writer.write_dataset_files(config_hash="x")
    src = tmp_path / "t.tsv"
    src.write_text("x\n")
    for sub in ("01", "02"):
        writer.write("timeseries", {"sub": sub, "task": "rest"}, src_file=src, space="MNI152NLin6Asym", atlas="A")
        writer.write("signed_relmat", {"sub": sub}, src_file=src, atlas="A")
        writer.write("embedding", {"sub": sub}, src_file=src, atlas="A", desc="fused")
    layout = BIDSLayout(tmp_path, validate=False, config=[str(pybids_config()), "derivatives"])
    found = layout.get(subject="02", atlas="A", stat="signedsc", suffix="relmat", extension=".tsv")
    assert [Path(f.path).name for f in found] == ["sub-02_atlas-A_stat-signedsc_relmat.tsv"]
    assert len(layout.get(stat="mean", suffix="timeseries", space="MNI152NLin6Asym")) == 2
    fused = layout.get(datatype="model", desc="fused", suffix="embedding")
    assert sorted(f.entities["subject"] for f in fused) == ["01", "02"]


def test_container_type_and_tag_come_from_the_image_environment(tmp_path: Path, monkeypatch):
    for name in ("BSYM_CONTAINER_TYPE", "BSYM_CONTAINER_TAG", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    writer = DerivativesWriter(tmp_path, {"raw": tmp_path.parent})
    writer.write_dataset_files(config_hash="x")
    assert "Container" not in json.loads((tmp_path / "dataset_description.json").read_text())["GeneratedBy"][0]
    monkeypatch.setenv("BSYM_CONTAINER_TYPE", "docker")
    monkeypatch.setenv("BSYM_CONTAINER_TAG", "bsym-app:0.1.0")
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/bsym-app.sif")  # the docker image run by apptainer
    writer.write_dataset_files(config_hash="x")
    generated = json.loads((tmp_path / "dataset_description.json").read_text())["GeneratedBy"][0]
    assert generated["Container"] == {"Type": "apptainer", "Tag": "bsym-app:0.1.0"}
    assert generated["Name"] == "bsym-app" and "CodeURL" not in generated
