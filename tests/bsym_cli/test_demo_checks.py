"""``bsym demo --check``: the truth checks pass on real runs and fail when a stage is broken."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bsym_cli.commands.demo.checks import (
    FMRI_OWN_MATCH,
    check_demo,
    check_dwi,
    check_fmri,
    check_model,
    check_probes,
)
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from tests.bsym_cli.conftest import run_app

BSYM = Path(sys.executable).with_name("bsym")


def _names(study) -> list[str]:
    return list(study["atlas"].names)


@pytest.fixture(scope="module")
def fmri_study(tmp_path_factory, study) -> dict:
    """Two demo participants at the demo's default run length (300 volumes; the session's 60-volume runs are
    too short for 26 confound regressors to leave the signal intact), fMRI stage only."""
    root = tmp_path_factory.mktemp("checks")
    build_demo(root, DemoSettings(participants=2, seed=7))
    args = ["participant", "--atlas-dataset", root / "atlases", "-w", root / "work", "--skip", "dmri", "model"]
    assert run_app(root / "bids", root / "out", *args, "--nprocs", "1") == 0
    return {"root": root, "out": root / "out", "atlas": study["atlas"]}


def _participants(root: Path) -> list[str]:
    return sorted(p.name.removesuffix("_params.json") for p in (root / "truth").glob("sub-*_params.json"))


def test_fmri_check_passes_the_real_run_and_fails_shuffled_parcel_labels(fmri_study, tmp_path):
    root, out = fmri_study["root"], fmri_study["out"]
    good = check_fmri(out, root / "truth", _participants(root), _names(fmri_study))
    assert good.passed, good.line
    assert good.values["participants"] == 2 and good.values["own_match"] >= FMRI_OWN_MATCH
    assert 0.5 <= good.values["median_r"] <= 1.0 and good.values["worst_r"] < good.values["median_r"]

    broken = tmp_path / "out"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("model", "figures", "*.html"))
    series = next((broken / "sub-02").glob("func/*_stat-mean_timeseries.tsv"))
    table = pd.read_csv(series, sep="\t")
    shuffled = np.random.default_rng(0).permutation(len(table.columns))
    table.set_axis(table.columns[shuffled], axis=1).to_csv(series, sep="\t", index=False)  # labels swapped
    bad = check_fmri(broken, root / "truth", _participants(root), _names(fmri_study))
    assert bad.passed is False and bad.values["own_match"] < 0.05, bad.line


def test_model_check_fails_random_weights(study):
    """The session's bundle has random weights: its reconstruction is worse than each region's mean."""
    result = check_model(study["out"], _participants(study["root"]))
    assert result.passed is False and result.values["median_r2"] < 0, result.line


def test_check_command_exits_1_naming_the_stages_that_are_off(fmri_study):
    """A run of the fMRI stage only: fMRI passes; dMRI and model have no outputs, which fails them."""
    result = subprocess.run(
        [str(BSYM), "demo", ".", "--check", "--outputs", "out"], cwd=fmri_study["root"], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  PASS  fMRI") and lines[2].startswith("  FAIL  dMRI   no streamline-count")
    assert lines[3].startswith("  FAIL  model  no reconstruction table")
    assert lines[4].startswith("        model  identifiability: not measured (no model outputs in out)")
    assert "Demo check failed for dMRI, model" in result.stderr


def test_probe_lines_say_when_n_is_too_small_and_list_the_baselines(study, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(study["out"], out)
    assert run_app(tmp_path / "none", out, "group", "--target", "age", "-w", tmp_path / "w") == 0
    (line,) = check_probes(out)
    assert line.passed is None
    assert line.line.startswith("age: n = 6 is too few participants for a probe to mean anything (only r > 0.73")
    probes = json.loads((out / "group" / "desc-bsym_probes.json").read_text())
    probes["age"]["n"] = 40  # the same numbers, as if the study were large enough to read
    (out / "group" / "desc-bsym_probes.json").write_text(json.dumps(probes))
    (line,) = check_probes(out)
    assert line.line.startswith("age (n = 40, pearson_r, 95% interval, permutation p): embeddings ")
    assert "; FC edges " in line.line and "global summaries" in line.line and "SC edges" not in line.line


def test_dwi_check_finds_the_planted_tracts_and_fails_an_atlas_left_unplaced(tmp_path):
    from tests.bsym_cli.test_placement import _template_space_study
    from tests.bsym_cli.test_reruns import bsym_app

    root = _template_space_study(tmp_path / "study")
    args = ["bids", "out", "participant", "--atlas-dataset", "atlases_2009c", "-w", "work", "--skip", "fmri", "model"]
    assert bsym_app(root, *args, "--streamlines", "4000", "--nprocs", "1").returncode == 0
    good = check_dwi(root / "out", root / "truth", ["sub-01"])
    assert good.passed, good.line
    assert good.values["share"] > 0.02  # 50x chance

    # The same participant's raw DWI with the atlas taken as is (--registration none ignores its head pose):
    # the parcels land on the wrong tissue.
    raw = tmp_path / "raw"
    build_demo(raw, DemoSettings(participants=1, seed=3, n_frames=160, n_dummy=2))
    unplaced = ["bids", "out", "participant", "--atlas-dataset", "atlases", "-w", "work", "--skip", "fmri", "model"]
    result = bsym_app(raw, *unplaced, "--registration", "none", "--streamlines", "4000", "--nprocs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    bad = check_dwi(raw / "out", raw / "truth", ["sub-01"])
    assert bad.passed is False and bad.values["median_rank"] > 0.01 * bad.values["pairs"], bad.line
    failed = [r.stage for r in check_demo(raw, raw / "out") if r.passed is False]
    assert failed == ["fMRI", "dMRI", "model"]  # fMRI and model were skipped: no outputs is a failure too
