"""The model stage through the real command line on small demo participants, and the group level."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainsymphony import BrainSymphony, save_bundle
from brainsymphony.fused_stream import fused_stream_available
from bsym_cli.commands.demo.study import DemoSettings, build_demo
from bsym_cli.levels.runtime import CACHE_VARIABLES
from pipelines.group.baselines import BASELINES
from tests.brainsymphony.tiny import tiny_config
from tests.bsym_cli.conftest import FRAMES, MANIFEST, _bundle, run_app


def test_output_file_set_matches_the_committed_manifest(study):
    out = study["out"]
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    names = sorted({re.sub(r"sub-0\d", "sub-01", n) for n in names if "/log/" not in n})
    assert names == MANIFEST.read_text().split()


def test_embeddings_features_and_maps_have_the_documented_content(study):
    out, atlas = study["out"], study["atlas"]
    model = out / "sub-01" / "model"
    emb = pd.read_csv(model / "sub-01_atlas-Schaefer400Tian450_desc-functional_embedding.tsv", sep="\t")
    assert emb.shape == (450, 2 + 16) and list(emb["name"]) == atlas.names and list(emb["index"]) == atlas.indices
    features = pd.read_csv(model / "sub-01_desc-bsym_features.tsv", sep="\t")
    assert features.loc[0, "n_windows"] == 5 and features.loc[0, "modality"] == "functional"
    np.testing.assert_allclose(
        features[[f"functional_{i:03d}" for i in range(16)]].to_numpy()[0],
        emb.iloc[:, 2:].to_numpy().mean(axis=0),
        atol=1e-5,
    )
    sidecar = json.loads((model / "sub-01_desc-bsym_features.json").read_text())
    assert sidecar["Bundle"] == "tiny-random" and len(sidecar["BundleSHA256"]) == 64
    assert sidecar["Sources"][0].startswith("bids:") is False or "sub-01" in sidecar["Sources"][0]
    with h5py.File(model / "sub-01_atlas-Schaefer400Tian450_desc-bsym_attention.h5") as h5:
        assert h5["spatial"].shape == (2, 2, 450, 450) and h5["spatial"].dtype == np.float16
        assert h5["temporal"].shape == (2, 2, FRAMES, FRAMES)
        assert h5["perceiver_time"].shape == (450, FRAMES) and h5["spatial"].attrs["axes"].startswith("layer")
        assert [n.decode() if isinstance(n, bytes) else n for n in h5["region_names"][:3]] == atlas.names[:3]
        region = np.asarray(h5["perceiver_region"], np.float64)
        spatial_rows = np.asarray(h5["spatial"], np.float64).sum(axis=-1)
    np.testing.assert_allclose(spatial_rows, 1.0, atol=2e-2)  # softmax rows, stored as float16
    np.testing.assert_allclose(region.sum(axis=1), 1.0, atol=2e-2)  # each query's weights over R*T keys
    stat = model / "sub-01_space-MNI152NLin6Asym_atlas-Schaefer400Tian450_desc-incomingattention_stat.nii.gz"
    painted = nib.load(stat)
    atlas_img = nib.load(atlas.image_for("MNI152NLin6Asym"))
    assert painted.shape == atlas_img.shape and np.allclose(painted.affine, atlas_img.affine)
    labels = np.asarray(atlas_img.dataobj)
    values = np.asarray(painted.dataobj)
    per_parcel = np.array([values[labels == i][0] for i in atlas.indices])
    assert per_parcel.sum() == pytest.approx(1.0, abs=1e-4)  # normalised incoming attention
    assert np.all(values[labels == 0] == 0)
    np.testing.assert_allclose(per_parcel, region.sum(axis=0) / region.sum(), atol=1e-3)
    report = (out / "sub-01.html").read_text()
    assert "Incoming attention per parcel" in report and "tiny-random" in report


def test_reconstruction_r2_scores_each_region_while_the_model_cannot_see_it(study):
    """Recompute one region's R^2 by hand: its fold's regions replaced by the mask token in every window."""
    import torch

    from brainsymphony import load_bundle
    from brainsymphony.precision import autocast
    from pipelines.defaults import DEFAULT_SEED
    from pipelines.model.inputs import cache_path, load_model_inputs
    from pipelines.model.scaling import robust_statistics, scale_windows

    cached = load_model_inputs(cache_path(study["work"], "01", "sub-01"))
    scaled = scale_windows(cached.windows, *robust_statistics(cached.windows))[0]
    model, _ = load_bundle(study["bundle"])
    order = np.random.default_rng(DEFAULT_SEED).permutation(450)  # 5 interleaved groups of the seeded order
    table = pd.read_csv(
        study["out"] / "sub-01" / "model" / "sub-01_desc-bsym_reconstruction.tsv", sep="\t", na_values="n/a"
    )
    assert list(table["index"]) == study["atlas"].indices
    # the precision `--precision auto` chose for the study: bf16 on CPUs with AMX, else fp32
    precision = _recorded_precision(study["out"] / "sub-01" / "model")
    model.eval()

    def reconstruction(mask: np.ndarray, precision: str) -> np.ndarray:
        """(W, R, T) reconstruction of the scaled windows with ``mask``'s entries hidden."""
        with torch.inference_mode(), autocast(precision, "cpu"):
            out = model(fmri=torch.from_numpy(scaled), entry_mask=torch.from_numpy(mask))
        return out.reconstruction.float().numpy()

    def r2(region: int, recon: np.ndarray) -> float:
        truth = scaled[:, region].astype(np.float64)
        return float(1 - ((recon[:, region] - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())

    seen = reconstruction(np.zeros(scaled.shape, bool), "fp32")
    for fold, region in ((0, order[0]), (3, order[3])):
        mask = np.zeros(scaled.shape, bool)
        mask[:, np.sort(order[fold::5])] = True
        hidden = reconstruction(mask, precision)
        assert table.loc[region, "r2"] == pytest.approx(r2(region, hidden), rel=1e-4, abs=1e-6)
        # the score depends on the region being hidden (in fp32: under bf16 this random model's difference
        # is below the rounding)
        hidden32 = hidden if precision == "fp32" else reconstruction(mask, "fp32")
        assert abs(r2(region, hidden32) - r2(region, seen)) > 1e-4


def test_same_inputs_give_the_same_embeddings_and_the_sidecars_record_the_scaling_used(study, tmp_path):
    """``--scaling study`` at the participant level scales by the participant's own statistics, and says so."""
    again = tmp_path / "again"
    args = [
        *study["args"][:1],
        again,
        *study["args"][2:-1],
        tmp_path / "w",
        "--participant-label",
        "02",
        "--scaling",
        "study",
    ]
    assert run_app(*args) == 0
    name = "sub-02/model/sub-02_atlas-Schaefer400Tian450_desc-functional_embedding.tsv"
    assert (again / name).read_bytes() == (study["out"] / name).read_bytes()
    for sidecar in (again / "sub-02" / "model").glob("*.json"):
        record = json.loads(sidecar.read_text())
        assert record["Scaling"] == "subject", sidecar.name
    features = json.loads((again / "sub-02/model/sub-02_desc-bsym_features.json").read_text())
    assert features["ComputedFrom"]["Scaling"] == "subject"


def test_rerun_skips_finished_participants_unless_overwrite(study, caplog):
    features = study["out"] / "sub-01" / "model" / "sub-01_desc-bsym_features.tsv"
    before = features.stat().st_mtime_ns
    assert run_app(*study["args"], "--participant-label", "01") == 0
    assert features.stat().st_mtime_ns == before
    caplog.set_level("INFO", logger="bsym")
    assert run_app(*study["args"], "--participant-label", "01", "--overwrite") == 0
    assert features.stat().st_mtime_ns > before
    stream = "compiled" if fused_stream_available() else "PyTorch"  # the log says which one embedded it
    assert re.search(rf"sub-01: embedding 5 window\(s\) on cpu \((fp32|bf16), {stream} key stream\)", caplog.text)


def test_bundle_with_another_region_count_is_refused(study, tmp_path, capsys):
    small = _bundle(tmp_path / "small", study["atlas"], regions=400)
    args = [a if a != study["bundle"] else small for a in study["args"]]
    args[1] = tmp_path / "out"
    assert run_app(*args, "--participant-label", "01") == 64
    assert "expects 400 regions" in capsys.readouterr().err


def test_bundle_without_the_participants_modality_refuses_it(study, tmp_path, capsys):
    config = tiny_config(n_regions=450, max_regions=450, mode="structural")
    path = tmp_path / "structural_only"
    save_bundle(
        BrainSymphony(config),
        path,
        name="sc-only",
        atlas=study["atlas"].label,
        labels_sha256=study["atlas"].labels_sha256,
        tr=0.72,
        licence="none",
        source="tests",
        training="none",
    )
    args = [a if a != study["bundle"] else path for a in study["args"]]
    args[1] = tmp_path / "out"
    assert run_app(*args, "--participant-label", "01") == 65
    err = capsys.readouterr().err
    assert "sc-only" in err and "cannot embed this participant's BOLD data" in err


def test_too_short_run_keeps_parcellation_and_skips_the_model(tmp_path, study, caplog):
    root = tmp_path / "short"
    build_demo(root, DemoSettings(participants=1, seed=1, n_frames=20, n_dummy=0, n_directions=12, n_b0=2))
    long_windows = _bundle(tmp_path / "long", study["atlas"], frames=64)  # 20 s at TR 1 -> 27 frames < 64
    out = tmp_path / "out"
    args = [
        root / "bids",
        out,
        "participant",
        "--skip",
        "dmri",
        "--atlas-dataset",
        root / "atlases",
        "--weights",
        long_windows,
        "-w",
        tmp_path / "w",
    ]
    caplog.set_level("INFO", logger="bsym")
    assert run_app(*args) == 0
    assert "fewer than one 64-frame window" in caplog.text
    assert list(out.glob("sub-01/func/*_stat-mean_timeseries.tsv"))
    assert not (out / "sub-01" / "model" / "sub-01_desc-bsym_features.tsv").exists()


def test_group_level_from_a_folder_copied_away_from_the_raw_data(study, tmp_path):
    copied = tmp_path / "derivatives"
    shutil.copytree(study["out"], copied)
    before = {p: p.stat().st_mtime_ns for p in copied.rglob("sub-*/**/*") if p.is_file()}
    code = run_app(
        tmp_path / "no_raw_data_here", copied, "group", "--target", "age", "--target", "sex", "-w", tmp_path / "w"
    )
    assert code == 0
    group = copied / "group"
    features = pd.read_csv(group / "desc-bsym_features.tsv", sep="\t")
    assert list(features["participant_id"]) == [f"sub-0{i}" for i in range(1, 7)]
    predictions = pd.read_csv(group / "desc-bsym_predictions.tsv", sep="\t")
    assert {"age_predicted", "age_observed", "sex_predicted"} <= set(predictions.columns)
    metrics = json.loads((group / "desc-bsym_probes.json").read_text())
    assert metrics["age"]["task"] == "regression" and metrics["sex"]["task"] == "classification"
    # every probe has its permutation p and interval, and the baselines beside it (no dMRI here: SC skipped)
    age = metrics["age"]
    assert 1 / 1001 <= age["permutation_p"] <= 1 and age["interval95"][0] <= age["pearson_r"] <= age["interval95"][1]
    baselines = age["baselines"]
    assert sorted(baselines) == sorted(BASELINES)
    assert baselines["FC edges"]["n_features"] == 450 * 449 // 2 and baselines["FC edges"]["n"] == 6
    assert baselines["SC edges"] == {"skipped": "no SC for sub-01, sub-02, sub-03 ..."}
    assert baselines["global summaries"]["n_features"] == 1  # mean FC only
    table = pd.read_csv(group / "desc-bsym_probes.tsv", sep="\t")
    assert list(table.loc[table["target"] == "sex", "features"]) == ["embeddings", *BASELINES]
    scored = table[table["score"].notna()]
    assert len(scored) == 6 and scored["permutation_p"].between(0, 1).all()
    page = (group / "desc-bsym_report.html").read_text()
    assert "FC edges" in page and "desc-bsym_probes.svg" in page and (group / "desc-bsym_probes.svg").exists()
    assert (group / "heads" / "target-age" / "head.json").exists()
    networks = json.loads((group / "atlas-Schaefer400Tian450_desc-networks_stat.json").read_text())
    assert networks["Clusters"] == 8 and networks["Participants"] == 6
    assert {p: p.stat().st_mtime_ns for p in before} == before  # participant outputs untouched
    head = group / "heads" / "target-age"
    args = [
        *study["args"][:1],
        tmp_path / "pred",
        *study["args"][2:-1],
        tmp_path / "w2",
        "--participant-label",
        "01",
        "--head",
        head,
    ]
    assert run_app(*args) == 0
    prediction = pd.read_csv(tmp_path / "pred/sub-01/model/sub-01_desc-bsym_prediction.tsv", sep="\t")
    assert prediction.loc[0, "target"] == "age" and np.isfinite(prediction.loc[0, "prediction"])


def test_study_scaling_with_two_torchrun_processes_equals_one_process(study, tmp_path):
    import subprocess
    import sys

    single, double = tmp_path / "single", tmp_path / "double"
    for copy in (single, double):
        shutil.copytree(study["out"], copy)
    args = ["group", "--scaling", "study", "-w", str(study["work"]), "--weights", str(study["bundle"])]
    assert run_app(tmp_path / "none", single, *args) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**{k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--no-python",
            str(torchrun.with_name("bsym-app")),
            str(tmp_path / "none"),
            str(double),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    one = pd.read_csv(single / "group" / "desc-bsym_features.tsv", sep="\t")
    two = pd.read_csv(double / "group" / "desc-bsym_features.tsv", sep="\t")
    assert list(one["participant_id"]) == list(two["participant_id"])
    columns = [c for c in one.columns if c.startswith("functional_")]
    np.testing.assert_allclose(one[columns].to_numpy(), two[columns].to_numpy(), atol=1e-5)
    participant = (
        pd.read_csv(study["out"] / "group" / "desc-bsym_features.tsv", sep="\t")
        if (study["out"] / "group").exists()
        else None
    )
    assert participant is None or not np.allclose(participant[columns], one[columns])  # study != subject scaling
    stats = pd.read_csv(single / "group" / "desc-studyscaling_stat.tsv", sep="\t")
    assert stats.shape == (450, 3) and (stats["iqr"] > 0).all()
    assert json.loads((single / "group" / "desc-bsym_features.json").read_text())["Scaling"] == "study"


def test_study_scaling_leaves_the_process_group_before_returning(study, tmp_path):
    """Every rank tears the gloo group down before its process ends (a rank that exits with the group alive
    can abort in C++ at exit: ``terminate called without an active exception``)."""
    import socket
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        import torch.distributed as dist
        from bsym_cli.cli.config import build_config
        from bsym_cli.levels.group import gather_features
        from bsym_cli.levels.study import study_embeddings
        out, work, bundle = sys.argv[1:4]
        config = build_config({"execution": {"bids_dir": out, "output_dir": out, "work_dir": work,
                                             "analysis_level": "group"},
                               "model": {"weights": bundle, "scaling": "study"}})
        result = study_embeddings(config, gather_features(config.execution.output_dir), "cpu")
        print("rows", None if result is None else len(result[0]), "group alive", dist.is_initialized())
    """)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES},
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
    }
    argv = [sys.executable, "-c", script, str(study["out"]), str(study["work"]), str(study["bundle"])]
    ranks = [
        subprocess.Popen(
            argv,
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [rank.communicate(timeout=600) for rank in ranks]
    for rank, (stdout, stderr) in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, stderr[-2000:]
        assert "group alive False" in stdout
    assert "rows 6" in outputs[0][0] and "rows None" in outputs[1][0]


def _recorded_precision(model_folder: Path) -> str:
    """The precision a participant's model outputs were computed in, from their sidecar."""
    return json.loads((model_folder / "sub-01_desc-bsym_features.json").read_text())["ComputedFrom"]["Precision"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.nan_to_num(np.ravel(a).astype(np.float64)), np.nan_to_num(np.ravel(b).astype(np.float64))
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_bf16_precision_keeps_every_output_within_cosine_0999_of_fp32_and_is_recorded(study, tmp_path):
    from brainsymphony.precision import resolve_precision

    bf16, fp32 = tmp_path / "bf16", tmp_path / "fp32"
    args = [*study["args"][:1], bf16, *study["args"][2:-1], tmp_path / "w", "--participant-label", "01"]
    assert run_app(*args, "--precision", "bf16") == 0
    auto_model, bf16_model = study["out"] / "sub-01/model", bf16 / "sub-01/model"
    fp32_model = auto_model
    if _recorded_precision(auto_model) != "fp32":  # `auto` took bf16 on this CPU (AMX): run fp32 explicitly
        args = [*study["args"][:1], fp32, *study["args"][2:-1], tmp_path / "w32", "--participant-label", "01"]
        assert run_app(*args, "--precision", "fp32") == 0
        fp32_model = fp32 / "sub-01/model"
    for name in (
        "atlas-Schaefer400Tian450_desc-functional_embedding",
        "desc-bsym_features",
        "desc-bsym_reconstruction",
    ):
        fp32_table, bf16_table = (pd.read_csv(m / f"sub-01_{name}.tsv", sep="\t") for m in (fp32_model, bf16_model))
        numbers = [c for c in fp32_table.select_dtypes("number").columns if c not in ("index", "n_windows")]
        assert not np.array_equal(fp32_table[numbers], bf16_table[numbers]), f"{name}: bf16 was not used"
        assert _cosine(fp32_table[numbers], bf16_table[numbers]) >= 0.999, name
    attention = "sub-01_atlas-Schaefer400Tian450_desc-bsym_attention.h5"
    with h5py.File(fp32_model / attention) as fp32_maps, h5py.File(bf16_model / attention) as bf16_maps:
        for key in ("spatial", "temporal", "perceiver_region", "perceiver_time"):
            assert _cosine(fp32_maps[key][()], bf16_maps[key][()]) >= 0.999, key

    assert _recorded_precision(bf16_model) == "bf16" and _recorded_precision(fp32_model) == "fp32"
    assert _recorded_precision(auto_model) == resolve_precision("auto", "cpu")  # fp32 unless this CPU has AMX
