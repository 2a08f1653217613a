"""Fine-tuning: a planted label is recovered; the exported head reproduces the model's predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainsymphony import BrainSymphony
from brainsymphony.errors import ConfigError
from brainsymphony.finetune import FinetuneConfig, finetune, prediction_metrics, subject_embeddings
from brainsymphony.pretraining import TrainingSet
from tests.brainsymphony.tiny import FRAMES, REGIONS, tiny_config

N_SUBJECTS, WINDOWS = 40, 2


def _planted(values: np.ndarray, seed: int) -> TrainingSet:
    """Two noise windows per subject; regions 0-2 are shifted by 1.5 * the subject's value."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(values.size), WINDOWS)
    fmri = rng.standard_normal((subject.size, REGIONS, FRAMES))
    fmri[:, :3, :] += 1.5 * values[subject, None, None]
    return TrainingSet(fmri=fmri.astype(np.float32), sc=None, subject=subject)


def test_full_finetuning_recovers_a_planted_class():
    labels = np.array(["control", "patient"] * (N_SUBJECTS // 2), dtype=object)
    data = _planted((labels == "patient").astype(float), seed=0)
    torch.manual_seed(0)
    model = BrainSymphony(tiny_config(mode="functional", dropout=0.0))
    config = FinetuneConfig(
        task="classification",
        embedding="functional",
        epochs=6,
        learning_rate=1e-3,
        head_learning_rate=3e-2,
        batch_size=4,
        seed=0,
    )
    result = finetune(model, data, labels, config=config)
    assert sorted(
        result.split["test"].tolist() + result.split["validation"].tolist() + result.split["train"].tolist()
    ) == list(range(N_SUBJECTS))
    assert result.split["test"].size == 8 and result.split["validation"].size == 6
    assert result.classes == ["control", "patient"]
    assert result.metrics["n"] == 8
    assert result.metrics["accuracy"] >= 0.875
    assert result.metrics["auc"] >= 0.9
    assert result.weight.shape == (2, 16) and result.bias.shape == (2,)
    # the exported head on the fine-tuned encoder's subject vectors gives the same decisions
    subjects, features = subject_embeddings(result.model, data, embedding="functional")
    scores = ((features - result.mean) / result.scale) @ result.weight.T + result.bias
    predicted = np.array(result.classes)[scores.argmax(axis=1)]
    assert np.mean(predicted[result.split["test"]] == labels[result.split["test"]]) == result.metrics["accuracy"]


def test_full_finetuning_recovers_a_planted_continuous_target():
    values = np.random.default_rng(5).uniform(-1.0, 1.0, N_SUBJECTS)
    data = _planted(values, seed=1)
    torch.manual_seed(1)
    model = BrainSymphony(tiny_config(mode="functional", dropout=0.0))
    config = FinetuneConfig(
        task="regression",
        embedding="functional",
        epochs=6,
        learning_rate=1e-3,
        head_learning_rate=3e-2,
        batch_size=4,
        seed=1,
    )
    targets = values.astype(object)
    targets[3] = np.nan  # a subject without a target is left out
    result = finetune(model, data, targets, config=config)
    assert 3 not in np.concatenate(list(result.split.values()))
    assert result.metrics["pearson_r"] > 0.8
    assert result.metrics["mse"] < 0.5 * result.metrics["mse_of_mean"]


def test_subject_embeddings_are_means_over_regions_and_windows():
    torch.manual_seed(0)
    model = BrainSymphony(tiny_config(mode="functional")).eval()
    data = _planted(np.zeros(3), seed=2)
    subjects, features = subject_embeddings(model, data, embedding="functional", batch_size=4)
    assert subjects.tolist() == [0, 1, 2] and features.shape == (3, 16)
    with torch.no_grad():
        windows = model(fmri=torch.as_tensor(data.fmri[2:4])).functional  # subject 1's two windows
    np.testing.assert_allclose(features[1], windows.mean(dim=(0, 1)).double().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no 'fused' embedding"):
        subject_embeddings(model, data, embedding="fused")


def test_prediction_metrics_match_their_definitions():
    truth = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    predicted = np.array([0.5, 1.0, 1.5, 4.0, 3.0])
    regression = prediction_metrics("regression", truth, predicted)
    assert regression["mse"] == pytest.approx(np.mean((truth - predicted) ** 2))
    assert regression["pearson_r"] == pytest.approx(np.corrcoef(truth, predicted)[0, 1])
    assert regression["spearman_rho"] == pytest.approx(0.9)  # one swapped pair: 1 - 6*2/(5*24)
    assert regression["mse_of_mean"] == pytest.approx(2.0)
    labels = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])
    classification = prediction_metrics("classification", labels, proba, ["a", "b"])
    assert classification["accuracy"] == pytest.approx(3 / 5)
    # class 0: tp 1, predicted 2, true 2 -> 0.5; class 1: tp 2, predicted 3, true 3 -> 2/3
    assert classification["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # AUC of class 1: positives 0.7, 0.2, 0.9 vs negatives 0.1, 0.6 -> 5 of 6 pairs ordered
    assert classification["auc"] == pytest.approx(5 / 6)
    assert classification["chance_accuracy"] == pytest.approx(0.6)
