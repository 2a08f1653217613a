"""``bsym pretrain`` / ``bsym finetune`` and the corpus readers, on tiny odd-sized corpora (R=7, T=11)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bsym_cli.commands.train import finetune, pretrain
from pipelines.model.corpus import read_corpus, read_corpus_file, save_corpus_file
from pipelines.model.inputs import save_model_inputs
from simulation.corpus import simulate_corpus, streamline_counts

R, T = 7, 11


def _corpus_file(path, *, subjects: int = 6, windows: int = 2):
    rng = np.random.default_rng(0)
    n = subjects * windows
    sources = np.cumsum(rng.standard_normal((n, 2, T)), axis=2)
    series = np.einsum("rk,nkt->nrt", rng.standard_normal((R, 2)), sources) + 5.0
    sc = rng.standard_normal((subjects, R, R))
    sc = (sc + sc.transpose(0, 2, 1)) * (1 - np.eye(R))
    ids = np.repeat([f"s{i}" for i in range(subjects)], windows)
    np.savez(
        path,
        windows=series.astype(np.float32),
        sc=np.repeat(sc, windows, axis=0).astype(np.float32),
        subject=ids,
        t_r=np.float64(0.8),
    )
    return path


def test_simulated_streamline_counts_are_symmetric_poisson_draws_of_the_weights():
    weights = np.array([[0, 1.0, 0.0], [1.0, 0, 3.0], [0.0, 3.0, 0]])
    sampled = streamline_counts(weights, 4e5, np.random.default_rng(0))
    assert np.array_equal(sampled, sampled.T) and np.all(np.diag(sampled) == 0) and sampled[0, 2] == 0
    assert sampled[0, 1] == pytest.approx(1e5, rel=0.02) and sampled[1, 2] == pytest.approx(3e5, rel=0.02)


def test_work_dir_corpus_groups_windows_by_participant_and_scales_per_subject(tmp_path):
    rng = np.random.default_rng(1)
    labels = list(range(3, 3 + R))
    sc = rng.standard_normal((R, R)).astype(np.float32)
    runs = {("01", "task-rest_run-1"): (3, sc), ("01", "task-rest_run-2"): (2, None), ("02", "task-rest"): (4, None)}
    for (subject, label), (count, connectome) in runs.items():
        windows = (rng.standard_normal((count, R, T)) * 3 + 7).astype(np.float32)
        save_model_inputs(
            tmp_path / f"sub-{subject}" / "model" / f"sub-{subject}_{label}_model_input.npz",
            windows=windows,
            sc=connectome,
            labels=labels,
            t_r=0.72,
        )
    corpus = read_corpus(tmp_path)
    assert corpus.subject_ids == ["01", "02"]
    assert corpus.windows.shape == (9, R, T)
    assert corpus.window_subject.tolist() == [0] * 5 + [1] * 4
    assert corpus.t_r == pytest.approx(0.72) and corpus.labels.tolist() == labels
    np.testing.assert_array_equal(corpus.sc[0], sc)
    assert np.isnan(corpus.sc[1]).all()
    both = corpus.training_set(functional=True, structural=True)
    assert both.fmri.shape == (5, R, T) and both.subject.tolist() == [0] * 5  # subject 02 has no connectome
    functional = corpus.training_set(functional=True, structural=False)
    scaled = functional.fmri[functional.subject == 1].transpose(1, 0, 2).reshape(R, -1)
    q25, median, q75 = np.percentile(scaled, [25, 50, 75], axis=1)
    np.testing.assert_allclose(median, 0.0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1.0, atol=1e-5)


def test_corpus_file_round_trip_and_errors(tmp_path):
    corpus = read_corpus_file(_corpus_file(tmp_path / "c.npz", subjects=3, windows=2))
    assert corpus.subject_ids == ["s0", "s1", "s2"] and corpus.window_subject.tolist() == [0, 0, 1, 1, 2, 2]
    assert corpus.sc.shape == (3, R, R) and corpus.t_r == pytest.approx(0.8)
    again = read_corpus_file(save_corpus_file(corpus, tmp_path / "again.npz"))
    np.testing.assert_array_equal(again.windows, corpus.windows)
    np.testing.assert_array_equal(again.sc, corpus.sc)
    np.savez(tmp_path / "bad.npz", windows=np.zeros((4, R, T), np.float32), sc=np.zeros((3, R, R), np.float32))
    with pytest.raises(Exception, match=r"'sc' has shape \(3, 7, 7\); expected \(4, R, R\)"):
        read_corpus(tmp_path / "bad.npz")
    with pytest.raises(Exception, match="no cached model inputs"):
        read_corpus(tmp_path)


def test_pretrain_then_finetune_from_the_command_line(tmp_path):
    corpus = _corpus_file(tmp_path / "corpus.npz")
    bundle = tmp_path / "bundle"
    runner = CliRunner()
    args = [
        str(corpus),
        "--out",
        str(bundle),
        "--stream-epochs",
        "1",
        "--perceiver-epochs",
        "1",
        "--joint-epochs",
        "1",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--holdout-fraction",
        "0.2",
    ]
    result = runner.invoke(pretrain, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from brainsymphony import load_bundle

    model, meta = load_bundle(bundle)
    assert model.config.n_regions == R and model.config.n_timepoints == T and not model.config.mask_tokens
    assert meta.tr == pytest.approx(0.8) and meta.sc_transform == "log10_count_per_volume"
    assert "NOT the BrainSymphony authors' weights" in meta.notes[0]
    report = json.loads((tmp_path / "bundle.training.json").read_text())
    assert [h["stage"] for h in report["history"]] == ["streams", "perceiver", "joint"]
    assert report["history"][-1]["step"] == 3 * 3  # 10 training windows in batches of 4, three stages
    assert "r2_masked_regions" in report["heldout_trained_float32"]
    # resuming a finished run trains nothing more: same weights
    resumed = runner.invoke(pretrain, [*args, "--resume"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert load_bundle(bundle)[1].sha256 == meta.sha256

    pd.DataFrame(
        {"participant_id": [f"sub-s{i}" for i in range(6)], "age": [20.0, 31.0, 45.0, 52.0, 67.0, 74.0]}
    ).to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    from pipelines.heads import load_head

    probe = runner.invoke(
        finetune,
        [
            str(corpus),
            "--targets",
            str(tmp_path / "p.tsv"),
            "--target",
            "age",
            "--weights",
            str(bundle),
            "--out",
            str(tmp_path / "probe"),
            "--threads",
            "1",
        ],
        catch_exceptions=False,
    )
    assert probe.exit_code == 0, probe.output
    head = load_head(tmp_path / "probe")
    assert head.task == "regression" and head.features[:2] == ["fused_000", "fused_001"] and len(head.features) == 128
    assert head.metadata["weights_sha256"] == meta.sha256 and head.metadata["method"] == "probe"

    full = runner.invoke(
        finetune,
        [
            str(corpus),
            "--targets",
            str(tmp_path / "p.tsv"),
            "--target",
            "age",
            "--weights",
            str(bundle),
            "--out",
            str(tmp_path / "full"),
            "--method",
            "full",
            "--epochs",
            "1",
            "--threads",
            "1",
        ],
        catch_exceptions=False,
    )
    assert full.exit_code == 0, full.output
    head = load_head(tmp_path / "full")
    encoder, encoder_meta = load_bundle(tmp_path / "full-encoder")
    assert head.metadata["encoder_sha256"] == encoder_meta.sha256 != meta.sha256
    assert head.weight.shape == (1, 128)


def test_simulated_corpus_is_reproducible_and_shaped_like_the_app_inputs():
    first = simulate_corpus(2, seed=3, n_timepoints=40)
    second = simulate_corpus(2, seed=3, n_timepoints=40)
    assert first.windows.shape == (2, 450, 40) and first.sc.shape == (2, 450, 450)
    np.testing.assert_array_equal(first.windows, second.windows)
    assert first.t_r == pytest.approx(0.72) and first.labels[0] == 1 and first.labels[-1] == 450
    sc = first.sc[0]
    assert np.array_equal(sc, sc.T) and np.all(np.diag(sc) == 0)
    nonzero = sc[sc != 0]
    assert 0.05 < nonzero.size / sc.size < 0.25  # density of the distance rule, 10-20% of pairs
    assert np.all(nonzero < 0.5) and np.median(nonzero) < -1.0  # log10 streamlines per mm^3, mostly < 1
    assert 20.0 <= first.covariates["age"].min() and first.covariates["age"].max() <= 80.0
