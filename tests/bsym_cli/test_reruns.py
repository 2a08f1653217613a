"""A user's first hour, replayed through the real command line.

Every run here is ``bsym-app`` in a subprocess, started from the study folder with relative paths, the way
the README's commands and a cluster job run it. Runs go into the same output and work folders after an
input was fixed, after a setting changed, after a SIGKILL at each stage, and concurrently; outputs are
compared byte for byte with a clean run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bsym_cli.bids.atlases import resolve_atlas
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from bsym_cli.levels.runtime import CACHE_VARIABLES
from tests import memory
from tests.bsym_cli.conftest import _bundle

APP = Path(sys.executable).with_name("bsym-app")
ROOT = Path(__file__).parents[2]
STALL = Path(__file__).with_name("stall")
OUT = Path("bids/derivatives/bsym")
FMRIPREP = Path("bids/derivatives/fmriprep")
#: The run of every test, as a user types it from the study folder (small and fast: no DWI denoising, no
#: registration, few streamlines, the tiny test bundle).
RUN = [
    "bids",
    str(OUT),
    "participant",
    "--atlas-dataset",
    "atlases",
    "-w",
    "work",
    "--weights",
    "tiny_bundle",
    "--registration",
    "none",
    "--streamlines",
    "200",
    "--no-dwi-denoise",
    "--nprocs",  # Linear: these tests are about reruns; `make demo` and the cluster test run MultiProc
    "1",
]
ONE = ["--participant-label", "01"]
#: The numerical libraries choose their kernels by CPU (AVX2, AVX-512 or AMX), and the last digits of the outputs
#: follow. These tests run bsym-app on the AVX2 kernels of each (numpy's dispatch, OpenBLAS, ATen, MKL, oneDNN),
#: so the pinned checksums hold on any x86-64 CPU with AVX2; README.md, "Reruns, kills and concurrent jobs", says
#: the same. With oneDNN capped below AMX, `--precision auto` is fp32 on every CPU.
PORTABLE_NUMERICS = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
FMRI_ONLY = ["--skip", "dmri", "model"]


def bsym_app(study: Path, *args: str, stall: str | None = None, wait: bool = True, code: Path | None = None):
    """Run ``bsym-app`` from ``study`` in a clean environment (no cache variables of this test process).

    ``code``: a folder of the project's packages to run instead of the installed ones (an upgrade).
    """
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES} | PORTABLE_NUMERICS
    if code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    if stall:
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(STALL), env.get("PYTHONPATH")])),
            BSYM_TEST_STALL=stall,
            BSYM_TEST_MARKER=str(study / f"stalled-{stall}"),
        )
    command = [str(APP), *args]
    if not wait:
        return subprocess.Popen(
            command,
            cwd=study,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(command, cwd=study, env=env, capture_output=True, text=True, timeout=900)


def snapshot(study: Path, prefix: str = "") -> dict[str, str]:
    """sha256 of every output (logs, reports and dotfiles aside), with the study's location blanked out."""
    root = study / OUT
    digests = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (
            not path.is_file()
            or "/log/" in f"/{relative}"
            or path.suffix == ".html"
            or any(part.startswith(".") for part in path.relative_to(root).parts)
            or not relative.startswith(prefix)
        ):
            continue
        data = path.read_bytes().replace(str(study).encode(), b"<study>")
        digests[relative] = hashlib.sha256(data).hexdigest()
    return digests


def computed_from(study: Path) -> dict:
    """The model stage's record of what sub-01's outputs were computed from."""
    return json.loads((study / OUT / "sub-01/model/sub-01_desc-bsym_features.json").read_text())["ComputedFrom"]


def leftovers(study: Path) -> list[Path]:
    return [p for p in (study / OUT).rglob(".bsym-tmp-*")] + [p for p in (study / "work").rglob(".bsym-tmp-*")]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A two-participant demo study with its atlas dataset and a tiny bundle."""
    root = tmp_path_factory.mktemp("source")
    build_demo(root, DemoSettings(participants=2, seed=5, n_frames=60, n_dummy=2, n_directions=12, n_b0=2))
    _bundle(root / "tiny_bundle", resolve_atlas("Schaefer400Tian450", atlas_dataset=root / "atlases"))
    return root


@pytest.fixture
def study(source: Path, tmp_path: Path) -> Path:
    """A private copy of the study for one test to change."""
    return Path(shutil.copytree(source, tmp_path / "study", symlinks=True))


@pytest.fixture(scope="module")
def reference_run(source: Path, tmp_path_factory) -> Path:
    """One clean run of sub-01, in a fresh copy of the study."""
    study = Path(shutil.copytree(source, tmp_path_factory.mktemp("reference") / "study", symlinks=True))
    result = bsym_app(study, *RUN, *ONE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return study


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> dict[str, str]:
    """Checksums of the outputs of the clean run of sub-01."""
    return snapshot(reference_run)


def test_readme_style_run_with_relative_paths_writes_every_output(reference):
    names = "\n".join(reference)
    for pattern in (
        "sub-01/func/sub-01_task-rest_space-MNI152NLin6Asym_atlas-Schaefer400Tian450_stat-mean_timeseries",
        "sub-01/dwi/sub-01_atlas-Schaefer400Tian450_stat-signedsc_relmat.tsv",
        "sub-01/model/sub-01_desc-bsym_features.tsv",
        "sub-01/model/sub-01_atlas-Schaefer400Tian450_desc-bsym_attention.h5",
        "sub-01/model/sub-01_atlas-Schaefer400Tian450_desc-fused_embedding.tsv",
    ):
        assert pattern in names
    assert not any(name.startswith("sub-02") for name in reference)


#: Pins of a few outputs of the reference run, one per stage. They change only on purpose: a change of the
#: science or of an output format. Regenerate with ``BSYM_UPDATE_CHECKSUMS=1 make test PYTEST_ARGS=-k pinned``
#: and say why in the commit. The parcellation, the connectome and the rounded feature table are pinned by their
#: bytes. The model's float32 embeddings, reconstruction and attention maps are pinned by their numbers: even on
#: the AVX2 kernels below, embeddings and maps differed in their last bits between the project's Intel and AMD
#: machines (one library still blocks its sums by CPU), so each table column and each map is pinned by its sum
#: of magnitudes, its sum of squares and one fixed random projection (a softmax map's plain sum is the same
#: whatever its weights): the sums to 1e-4 relative, the projection to 1e-5 of the sum of magnitudes (float32
#: rounding moves each number by far less).
PINNED = Path(__file__).parent.parent / "data" / "output_checksums.json"
PINNED_OUTPUTS = (
    "sub-01/func/sub-01_task-rest_space-MNI152NLin6Asym_atlas-Schaefer400Tian450_stat-mean_timeseries.tsv",
    "sub-01/dwi/sub-01_atlas-Schaefer400Tian450_stat-signedsc_relmat.tsv",
    "sub-01/model/sub-01_desc-bsym_features.tsv",
)
PINNED_NUMBERS = (
    "sub-01/model/sub-01_atlas-Schaefer400Tian450_desc-fused_embedding.tsv",
    "sub-01/model/sub-01_desc-bsym_reconstruction.tsv",
    "sub-01/model/sub-01_atlas-Schaefer400Tian450_desc-bsym_attention.h5",
)
PINNED_TOLERANCE = 1e-4


def number_pins(path: Path) -> dict[str, list]:
    """[shape, sum of magnitudes, sum of squares, projection on fixed weights in [-1, 1]] of every numeric column
    of a TSV, or of every numeric dataset of an HDF5 file."""
    if path.suffix == ".h5":
        import h5py

        arrays = {}
        with h5py.File(path) as maps:  # every numeric dataset, at any depth (region names are strings)

            def collect(name: str, item) -> None:
                if isinstance(item, h5py.Dataset) and item.dtype.kind in "fiu":
                    arrays[name] = np.asarray(item[()], np.float64)

            maps.visititems(collect)
    else:
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        arrays = {column: table[column].to_numpy(np.float64) for column in table.select_dtypes("number").columns}
    pins = {}
    for name, values in arrays.items():
        flat = np.nan_to_num(values.ravel())
        weights = np.random.default_rng(0).uniform(-1.0, 1.0, flat.size)
        pins[name] = [list(values.shape), float(np.abs(flat).sum()), float(flat @ flat), float(flat @ weights)]
    return pins


def test_outputs_match_the_pinned_checksums(reference, reference_run):
    found = {
        "bytes": {name: reference.get(name) for name in PINNED_OUTPUTS},
        "numbers": {name: number_pins(reference_run / OUT / name) for name in PINNED_NUMBERS},
    }
    if os.environ.get("BSYM_UPDATE_CHECKSUMS"):
        PINNED.write_text(json.dumps(found, indent=2) + "\n")
    pinned = json.loads(PINNED.read_text())
    assert found["bytes"] == pinned["bytes"]
    for name, pins in pinned["numbers"].items():
        assert sorted(found["numbers"][name]) == sorted(pins), f"{name}: other columns or maps"
        for key, (shape, magnitude, squares, projection) in pins.items():
            got_shape, got_magnitude, got_squares, got_projection = found["numbers"][name][key]
            assert got_shape == shape, f"{name} {key}"
            assert got_magnitude == pytest.approx(magnitude, rel=PINNED_TOLERANCE), f"{name} {key}"
            assert got_squares == pytest.approx(squares, rel=PINNED_TOLERANCE), f"{name} {key}"
            assert abs(got_projection - projection) <= PINNED_TOLERANCE / 10 * magnitude, f"{name} {key}"


def test_relative_work_dir_and_atlas_dataset_in_a_config_file_reach_the_nodes(study):
    (study / "settings.toml").write_text(
        '[execution]\nwork_dir = "scratch/work"\n\n[workflow]\natlas_dataset = "atlases"\n'
    )
    result = bsym_app(study, "bids", str(OUT), "participant", "--config-file", "settings.toml", *ONE, *FMRI_ONLY)
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = next((study / "scratch" / "work").glob("*/config.toml")).read_text()
    assert f'work_dir = "{study}/scratch/work"' in dumped
    assert f'atlas_dataset = "{study}/atlases"' in dumped
    assert (study / "scratch/work/sub-01/sub_01_wf").is_dir()


def test_same_run_again_skips_the_model_stage_and_changes_nothing(study, reference):
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    features = study / OUT / "sub-01/model/sub-01_desc-bsym_features.tsv"
    stamp = features.stat().st_mtime_ns
    again = bsym_app(study, *RUN, *ONE)
    assert again.returncode == 0
    assert "model outputs are up to date" in again.stderr
    assert features.stat().st_mtime_ns == stamp
    assert snapshot(study) == reference


def test_changed_setting_recomputes_the_model_stage_and_going_back_restores_the_bytes(study, reference):
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    changed = bsym_app(study, *RUN, *ONE, "--denoise-strategy", "none")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "up to date" not in changed.stderr
    now = snapshot(study)
    for name in (
        "sub-01/model/sub-01_desc-bsym_features.tsv",
        "sub-01/model/sub-01_atlas-Schaefer400Tian450_desc-bsym_attention.h5",
        "sub-01/model/sub-01_atlas-Schaefer400Tian450_desc-functional_embedding.tsv",
    ):
        assert now[name] != reference[name], name
    record = computed_from(study)
    assert set(record) >= {"ModelInputsSHA256", "BundleSHA256", "Scaling", "Seed"}
    back = bsym_app(study, *RUN, *ONE)
    assert back.returncode == 0 and "up to date" not in back.stderr
    assert snapshot(study) == reference


def test_upgraded_code_reruns_the_steps_it_changes_and_keeps_the_rest(study, reference, tmp_path):
    """An upgrade edits the registration module and the Perceiver: a rerun into the same -w redoes
    registration and what follows it, and the model stage, but not the BOLD steps or the FOD fit."""
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    before = computed_from(study)
    work = study / "work/sub-01"
    stamps = {path: path.stat().st_mtime_ns for path in work.rglob("result_*.pklz")}
    upgraded = tmp_path / "upgraded"
    for package in ("bsym_cli", "pipelines", "brainsymphony"):
        shutil.copytree(ROOT / package, upgraded / package, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    for module in ("pipelines/dmri/register.py", "brainsymphony/perceiver.py"):
        with (upgraded / module).open("a") as file:
            file.write("\n# edited by an upgrade\n")

    rerun = bsym_app(study, *RUN, *ONE, code=upgraded)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "model outputs are up to date" not in rerun.stderr
    redone = {
        path.name.removeprefix("result_").removesuffix(".pklz")
        for path, stamp in stamps.items()
        if path.stat().st_mtime_ns != stamp
    }
    assert {"register_atlas", "connectome"} <= redone
    assert not redone & {"atlas_grid", "parcellate", "denoise", "windows", "tables", "prepare_dwi", "fit_fods", "track"}
    now = snapshot(study)
    pinned = PINNED_OUTPUTS + PINNED_NUMBERS  # on one machine, every pinned output keeps its bytes
    assert {name: now[name] for name in pinned} == {name: reference[name] for name in pinned}
    assert computed_from(study)["CodeSHA256"] != before["CodeSHA256"]


def test_rerun_without_a_head_removes_the_old_predictions(study, source):
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    model = study / OUT / "sub-01/model"
    stale = model / "sub-01_desc-bsym_prediction.tsv"
    stale.write_text("head\tprediction\nold\t1.0\n")  # what a run with --head left
    assert bsym_app(study, *RUN, *ONE, "--denoise-strategy", "none").returncode == 0
    assert not stale.exists()


def test_corrected_repetition_time_reaches_the_outputs(study, reference):
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    sidecar = next((study / FMRIPREP / "sub-01/func").glob("*_desc-preproc_bold.json"))
    original = sidecar.read_text()
    meta = json.loads(original)
    sidecar.write_text(json.dumps({**meta, "RepetitionTime": 1.5}))
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    timeseries = next((study / OUT / "sub-01/func").glob("*_timeseries.json"))
    assert json.loads(timeseries.read_text())["RepetitionTime"] == 1.5
    assert (
        snapshot(study)["sub-01/model/sub-01_desc-bsym_features.tsv"]
        != reference["sub-01/model/sub-01_desc-bsym_features.tsv"]
    )
    sidecar.write_text(original)
    assert bsym_app(study, *RUN, *ONE).returncode == 0
    assert json.loads(timeseries.read_text())["RepetitionTime"] == meta["RepetitionTime"]
    assert snapshot(study) == reference


def test_restored_confounds_are_found_on_the_next_run(study, reference):
    confounds = next((study / FMRIPREP / "sub-01/func").glob("*_desc-confounds_timeseries.tsv"))
    aside = study / "confounds.tsv"
    confounds.rename(aside)
    missing = bsym_app(study, *RUN, *ONE)
    assert missing.returncode == 66
    assert "confounds" in missing.stderr
    aside.rename(confounds)
    restored = bsym_app(study, *RUN, *ONE)
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert snapshot(study) == reference


@pytest.mark.parametrize("stage", ["indexing", "fmri", "dmri", "model"])
def test_run_killed_at_a_stage_then_rerun_gives_the_clean_bytes(study, reference, stage):
    marker = study / f"stalled-{stage}"
    process = bsym_app(study, *RUN, *ONE, stall=stage, wait=False)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, f"the run ended before reaching {stage}:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"the run did not reach {stage} in 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    if stage == "indexing":  # an unfinished index is left, as after a kill or a full disk
        assert [p.name for p in (study / "work/bids_db").iterdir() if p.name.startswith(".bsym-tmp-")]
    if stage == "model":  # a half-written attention file, which reports used to read as an output
        assert [p for p in leftovers(study) if p.name.endswith("_attention.h5")]
        reports = bsym_app(study, *RUN, *ONE, "--reports-only")
        assert reports.returncode == 0, reports.stderr[-3000:]
    rerun = bsym_app(study, *RUN, *ONE)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert snapshot(study) == reference
    assert not leftovers(study)
    assert not list(study.glob("crash-*")), "no crash file in the current folder"


def test_two_participants_and_the_same_participant_twice_run_concurrently(study, reference):
    runs = [bsym_app(study, *RUN, *labels, wait=False) for labels in (ONE, ["--participant-label", "02"], ONE)]
    outputs = [process.communicate(timeout=900)[0] for process in runs]
    for process, output in zip(runs, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    assert any("Another bsym-app run is processing sub-01" in output for output in outputs)
    assert snapshot(study, "sub-01") == {k: v for k, v in reference.items() if k.startswith("sub-01")}
    assert (study / OUT / "sub-02/model/sub-02_desc-bsym_features.tsv").exists()


# --- bad inputs: each gets its own message and exit code, and the other participant is processed ---


def _bold(study: Path, subject: str = "01") -> Path:
    return next((study / FMRIPREP / f"sub-{subject}/func").glob("*_desc-preproc_bold.nii.gz"))


def _set_tr(value):
    def defect(study: Path) -> Path:
        sidecar = _bold(study).with_name(_bold(study).name.replace(".nii.gz", ".json"))
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "RepetitionTime": value}))
        return sidecar

    return defect


def _malformed_sidecar(study: Path) -> Path:
    sidecar = _bold(study).with_name(_bold(study).name.replace(".nii.gz", ".json"))
    sidecar.write_text('{"RepetitionTime": 1.0,,}')
    return sidecar


def _constant_bold(study: Path) -> Path:
    img = nib.load(_bold(study))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine, img.header), _bold(study))
    return _bold(study)


def _truncated_bold(study: Path) -> Path:
    data = _bold(study).read_bytes()
    _bold(study).write_bytes(data[: len(data) // 2])
    return _bold(study)


def _mask_on_another_grid(study: Path) -> Path:
    mask = next(_bold(study).parent.glob("*_desc-brain_mask.nii.gz"))
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine, img.header), mask)
    return mask


def _confounds(study: Path) -> Path:
    return next(_bold(study).parent.glob("*_desc-confounds_timeseries.tsv"))


def _confounds_short(study: Path) -> Path:
    table = pd.read_csv(_confounds(study), sep="\t")
    table.iloc[:-3].to_csv(_confounds(study), sep="\t", index=False, na_rep="n/a")
    return _confounds(study)


def _confounds_without_motion(study: Path) -> Path:
    table = pd.read_csv(_confounds(study), sep="\t")
    table.drop(columns=[c for c in table.columns if c.startswith("trans_")]).to_csv(
        _confounds(study), sep="\t", index=False, na_rep="n/a"
    )
    return _confounds(study)


@pytest.mark.parametrize(
    "defect, words",
    [
        (_set_tr("2.0"), "not a number"),
        (_set_tr(-1), "positive number of seconds"),
        (_set_tr("two seconds"), "not a number"),
        (_malformed_sidecar, "not valid JSON"),
        (_constant_bold, "does not change over time"),
        (_truncated_bold, "truncated or corrupt"),
        (_mask_on_another_grid, "on another grid"),
        (_confounds_short, "rows but the BOLD series has"),
        (_confounds_without_motion, "cannot build the 'simple' confounds"),
    ],
    ids=[
        "tr-string",
        "tr-negative",
        "tr-words",
        "sidecar-json",
        "constant-bold",
        "truncated-bold",
        "mask-grid",
        "confounds-rows",
        "confounds-columns",
    ],
)
def test_bad_input_of_one_participant_exits_65_naming_the_file_and_the_other_is_processed(study, defect, words):
    path = defect(study)
    result = bsym_app(study, *RUN, *FMRI_ONLY)
    assert result.returncode == 65, result.stderr[-3000:]
    assert str(path.relative_to(study)) in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr
    assert list((study / OUT / "sub-02/func").glob("*_timeseries.tsv"))
    assert not (study / OUT / "sub-01/func").exists()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda table: table.iloc[:-1], "have no row in"),
        (lambda table: table.assign(index=table["index"].replace(450, 451)), "have no row in"),
    ],
    ids=["missing-row", "index-differs"],
)
def test_atlas_table_that_disagrees_with_its_image_exits_65(study, change, words):
    for tsv in (study / "atlases").rglob("*_dseg.tsv"):
        change(pd.read_csv(tsv, sep="\t")).to_csv(tsv, sep="\t", index=False)
    result = bsym_app(study, *RUN, *ONE, *FMRI_ONLY)
    assert result.returncode == 65, result.stderr[-3000:]
    assert "atlases/" in result.stderr and words in result.stderr


def test_a_file_named_like_a_label_in_the_current_folder_is_not_read_as_a_label_list(study):
    (study / "01").write_text("02\n")
    result = bsym_app(study, *RUN, *ONE, *FMRI_ONLY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'01' is read as a label" in result.stderr
    assert (study / OUT / "sub-01").is_dir() and not (study / OUT / "sub-02").exists()


def test_output_dir_that_is_the_fmriprep_dataset_is_refused_untouched(study):
    description = study / FMRIPREP / "dataset_description.json"
    before = description.read_bytes()
    result = bsym_app(study, "bids", str(FMRIPREP), "participant", *RUN[3:], *ONE)
    assert result.returncode == 64
    assert "fMRIPrep" in result.stderr and "dataset_description.json" in result.stderr
    assert description.read_bytes() == before


def test_crash_files_go_to_each_participants_own_log_folder_as_text(study):
    result = bsym_app(study, *RUN, *FMRI_ONLY, stall="fmri-crash")
    assert result.returncode == 1
    for subject in ("01", "02"):
        crashes = sorted((study / OUT / f"sub-{subject}" / "log").glob("*/crash-*"))
        (crash,) = [c for c in crashes if "bsym-app" not in c.name]  # the node's, beside the participant's
        assert crash.suffix == ".txt" and f"sub_{subject}_wf" in crash.read_text()
        assert "planted failure" in crash.read_text()
        assert str(crash) in result.stderr
        (failure,) = [c for c in crashes if c.name.endswith(f"-bsym-app-sub-{subject}.txt")]
        assert f"sub-{subject} failed" in failure.read_text()
        report = (study / OUT / f"sub-{subject}.html").read_text()  # a failed participant has a report too
        errors = report[report.index('<div id="Errors"') :]
        assert f"sub-{subject} failed" in errors and crash.name in errors and "planted failure" in errors
        assert "One or more execution steps failed (2)" in errors
    assert not list(study.glob("crash-*")) and not list(study.rglob("crash-*.pklz"))


def test_input_defect_found_inside_a_node_exits_65_with_its_message(study):
    result = bsym_app(study, *RUN, *ONE, *FMRI_ONLY, stall="fmri-input-error")
    assert result.returncode == 65, result.stderr[-3000:]
    assert "planted defect; replace the file." in result.stderr and "_desc-confounds_timeseries.tsv" in result.stderr
    assert "Traceback" not in result.stderr


def test_fd_threshold_reaches_the_scrubbing_censoring(study):
    sidecar = (
        study
        / OUT
        / "sub-01/func/sub-01_task-rest_space-MNI152NLin6Asym_atlas-Schaefer400Tian450_stat-mean_timeseries.json"
    )
    scrubbing = [*RUN, *ONE, *FMRI_ONLY, "--denoise-strategy", "scrubbing"]
    assert bsym_app(study, *scrubbing).returncode == 0
    preset = json.loads(sidecar.read_text())
    assert "FDThreshold" not in preset
    result = bsym_app(study, *scrubbing, "--fd-thresh", "0.025")  # below the spikes, above most frames
    assert result.returncode == 0, result.stderr[-2000:]
    strict = json.loads(sidecar.read_text())
    assert strict["FDThreshold"] == 0.025
    assert len(strict["CensoredFrames"]) > len(preset["CensoredFrames"])
    refused = bsym_app(study, *RUN, *ONE, *FMRI_ONLY, "--fd-thresh", "0.05")  # the default strategy is simple
    assert refused.returncode == 64 and "scrubbing" in refused.stderr


@pytest.mark.skipif(not memory.available(), reason="needs /proc/<pid>/smaps_rollup (Linux 4.14+) to measure PSS")
def test_mem_is_a_budget_the_run_keeps_under_or_refuses_at_start(study):
    budget = 1500
    command = [str(APP), *RUN, *ONE, "--nprocs", "2", "--mem-mb", str(budget)]
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    result, peak = memory.run_measured(command, cwd=study, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Memory budget {budget} MB" in result.stderr
    assert peak < budget, f"the run held {peak:.0f} MB of PSS under --mem-mb {budget}"
    small = bsym_app(study, *RUN, *ONE, *FMRI_ONLY, "--mem", "300")  # a bare number is MB, as in fMRIPrep
    assert small.returncode == 0, small.stderr[-3000:]
    warning = re.search(r"--mem 300 MB cannot hold this run: .* needs about (\d+) MB", small.stderr)
    assert warning, small.stderr[-3000:]
    assert small.stderr.index("cannot hold this run") < small.stderr.index("running 1 fMRI")  # said at start
    assert f"Give --mem-mb {warning.group(1)} or more" in small.stderr
