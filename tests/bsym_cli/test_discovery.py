"""Input discovery with pybids on several layouts, and every validation error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bsym_cli.bids.discovery import choose_spaces, discover
from bsym_cli.bids.validate import count_nonfinite, validate
from bsym_cli.cli.config import build_config
from bsym_cli.utils.errors import ExitCode, InputDataError, MissingInputError
from tests.data.bids import make_dataset


def _config(bids: Path, tmp_path: Path, **execution):
    workflow = execution.pop("workflow", {})
    return build_config(
        {
            "execution": {
                "bids_dir": bids,
                "output_dir": tmp_path / "out",
                "work_dir": tmp_path / "w",
                "analysis_level": "participant",
                **execution,
            },
            "workflow": workflow,
        }
    )


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


def test_sessions_runs_both_spaces_and_qsiprep_preferred(tmp_path: Path):
    bids = make_dataset(
        tmp_path / "bids",
        subjects=("01", "02", "03"),
        sessions=("pre", "post"),
        runs=("1", "2"),
        spaces=("MNI152NLin6Asym", "MNI152NLin2009cAsym"),
        qsiprep=True,
    )
    before = _snapshot(bids)
    study = discover(_config(bids, tmp_path, participant_label=("sub-03", "01")))
    assert _snapshot(bids) == before  # nothing written into BIDS_DIR (the index lives in the work dir)
    assert any((tmp_path / "w" / "bids_db").iterdir())
    assert [p.label for p in study.participants] == [
        "sub-03_ses-post",
        "sub-03_ses-pre",
        "sub-01_ses-post",
        "sub-01_ses-pre",
    ]
    part = study.participants[0]
    assert len(part.bold_runs) == 4  # 2 runs x 2 spaces
    assert {r.space for r in part.bold_runs} == {"MNI152NLin6Asym", "MNI152NLin2009cAsym"}
    for run in part.bold_runs:
        stem = run.bold.name.split("_space-")[0]
        assert run.confounds.name == f"{stem}_desc-confounds_timeseries.tsv"
        assert run.mask.name == run.bold.name.replace("desc-preproc_bold", "desc-brain_mask")
        assert run.t_r == 2.0
    assert [d.source for d in part.dwi_runs] == ["qsiprep"]
    assert part.dwi_runs[0].mask.name == "sub-03_ses-post_space-T1w_desc-brain_mask.nii.gz"
    assert part.t1w.name == "sub-03_ses-post_T1w.nii.gz"
    chosen = choose_spaces(part.bold_runs, ["MNI152NLin2009cAsym"])
    assert sorted(r.bold.name for r in chosen) == [
        f"sub-03_ses-post_task-rest_run-{r}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz" for r in "12"
    ]


def test_raw_dwi_used_when_no_qsiprep_and_session_filter(tmp_path: Path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), sessions=("a", "b"), res=None)
    study = discover(_config(bids, tmp_path, session_label=("ses-b",)))
    (part,) = study.participants
    assert part.session == "b"
    assert part.bold_runs[0].bold.name == "sub-01_ses-b_task-rest_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    (dwi,) = part.dwi_runs
    assert (dwi.source, dwi.mask, dwi.bval.name) == ("raw", None, "sub-01_ses-b_dwi.bval")


def test_bids_filters_and_task_selection(tmp_path: Path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), tasks=("rest", "nback"), runs=("1", "2"))
    study = discover(_config(bids, tmp_path, task_id=("nback",)))
    assert sorted(r.entities["task"] for r in study.participants[0].bold_runs) == ["nback", "nback"]
    study = discover(_config(bids, tmp_path, bids_filters={"bold": {"run": "2", "task": "*"}}))
    assert sorted(r.entities["task"] + r.entities["run"] for r in study.participants[0].bold_runs) == [
        "nback2",
        "rest2",
    ]
    single = make_dataset(tmp_path / "single", subjects=("01",))
    study = discover(_config(single, tmp_path, bids_filters={"bold": {"run": None}}))
    assert len(study.participants[0].bold_runs) == 1


@pytest.mark.parametrize(
    "defect, message, missing",
    [
        ("no-confounds", "no matching *_desc-confounds_timeseries.tsv", True),
        ("no-mask", "no brain mask", True),
        ("no-tr", "no RepetitionTime", False),
        ("3d-bold", "is 3-D", False),
        ("nan-bold", "1 non-finite values", False),
    ],
)
def test_bold_defects_skip_the_participant_and_name_the_file(tmp_path: Path, defect, message, missing):
    bids = make_dataset(tmp_path / "bids", subjects=("01", "02"), dwi=False, defects={"02": defect})
    study = discover(_config(bids, tmp_path))
    usable = validate(study)
    assert [p.subject for p in usable] == ["01"]
    (problem,) = study.participants[1].problems
    assert message in problem and "sub-02" in problem
    only_bad = discover(_config(bids, tmp_path, participant_label=("02",)))
    error = MissingInputError if missing else InputDataError
    with pytest.raises(error) as info:
        validate(only_bad)
    assert info.value.code == (ExitCode.MISSING_INPUT if missing else ExitCode.BAD_INPUT_DATA)


@pytest.mark.parametrize(
    "defect, message",
    [
        ("bval-count", "bval"),
        ("no-bval", "no .bval file"),
    ],
)
def test_dwi_defects_drop_the_series(tmp_path: Path, defect, message):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), defects={"01": defect})
    study = discover(_config(bids, tmp_path))
    (part,) = validate(study)
    assert part.dwi_runs == [] and len(part.bold_runs) == 1
    assert any(message in p and "sub-01_dwi" in p for p in part.problems)


def test_count_nonfinite_reads_gz_in_chunks(tmp_path: Path, monkeypatch):
    import nibabel as nib
    import numpy as np

    from pipelines import niftistream

    data = np.zeros((7, 8, 9, 5), np.float32)
    data[6, 7, 8, 4] = np.inf
    data[0, 0, 0, 0] = np.nan
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert count_nonfinite(path) == 2
    assert sum(v.size for v in niftistream.iter_raw_values(path, block_bytes=100)) == data.size
    nib.save(nib.Nifti1Image(np.ones((7, 8, 9), np.int16), np.eye(4)), tmp_path / "i.nii.gz")
    assert count_nonfinite(tmp_path / "i.nii.gz") == 0


def test_derivatives_found_by_generated_by_name_not_folder_name(tmp_path: Path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",))
    os.rename(bids / "derivatives" / "fmriprep", bids / "derivatives" / "fp-24")
    study = discover(_config(bids, tmp_path))
    assert study.derivatives["fmriprep"] == bids / "derivatives" / "fp-24"
    desc = bids / "derivatives" / "fp-24" / "dataset_description.json"
    desc.write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0", "GeneratedBy": [{"Name": "other"}]}))
    with pytest.raises(MissingInputError, match="No fMRIPrep derivatives"):
        discover(_config(bids, tmp_path))
    study = discover(_config(bids, tmp_path, derivatives={"fmriprep": bids / "derivatives" / "fp-24"}))
    assert len(study.participants[0].bold_runs) == 1


@pytest.mark.parametrize(
    "value, t_r, words",
    [
        (2, 2.0, None),
        (0.72, 0.72, None),
        (None, None, None),
        ("2.0", None, "not a number"),
        ("two seconds", None, "not a number"),
        (-1, None, "positive"),
        (0, None, "positive"),
        (True, None, "not a number"),
    ],
)
def test_repetition_time_is_a_positive_json_number(value, t_r, words):
    from bsym_cli.bids.discovery import repetition_time

    parsed, problem = repetition_time(value)
    assert parsed == t_r
    assert (problem is None) if words is None else (words in problem)


def test_the_index_follows_the_files_and_an_unfinished_index_is_never_used(tmp_path: Path):
    bids = make_dataset(tmp_path / "bids", subjects=("01",), dwi=False)
    config = _config(bids, tmp_path)
    assert discover(config).participants[0].bold_runs[0].t_r == 2.0
    sidecar = next((bids / "derivatives/fmriprep/sub-01/func").glob("*_bold.json"))
    sidecar.write_text(json.dumps({"RepetitionTime": 1.5}))
    (run,) = discover(config).participants[0].bold_runs
    assert run.t_r == 1.5
    indexes = sorted(p.name for p in (tmp_path / "w" / "bids_db").iterdir())
    assert len(indexes) == 4  # raw + fMRIPrep, before and after the edit (old ones go after an hour unused)
    confounds = run.confounds
    confounds.rename(tmp_path / "aside.tsv")
    assert discover(config).participants[0].bold_runs[0].confounds is None
    (tmp_path / "aside.tsv").rename(confounds)
    assert discover(config).participants[0].bold_runs[0].confounds == confounds
    sidecar.write_text('{"RepetitionTime": 1.5,')
    (run,) = discover(config).participants[0].bold_runs
    assert run.t_r is None and "not valid JSON" in run.t_r_problem
