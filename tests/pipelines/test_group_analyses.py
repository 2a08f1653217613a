"""Probes and network identification on planted effects; head bundles round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import InputDataError
from pipelines.group.networks import identify_networks, plot_contingency
from pipelines.group.probes import alpha_grid, run_probe, score_probe, target_task
from pipelines.group.significance import smallest_detectable_r
from pipelines.heads import load_head, save_head


def _features(n: int = 60, f: int = 11, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f))
    return x, [f"fused_{i:03d}" for i in range(f)], rng


def test_ridge_probe_finds_planted_age_and_not_shuffled_age(tmp_path: Path):
    x, names, rng = _features()
    age = 40 + 8 * x[:, 2] - 5 * x[:, 7] + rng.standard_normal(len(x))
    result = run_probe(x, age, name="age", feature_names=names, seed=3)
    assert result.task == "regression"
    assert result.metrics["pearson_r"] > 0.9 and result.metrics["mse"] < 0.2 * result.metrics["mse_of_mean"]
    shuffled = run_probe(x, rng.permutation(age), name="age", feature_names=names, seed=3)
    assert shuffled.metrics["pearson_r"] < 0.5 and shuffled.metrics["mse"] > 0.7 * shuffled.metrics["mse_of_mean"]
    again = run_probe(x, age, name="age", feature_names=names, seed=3)
    np.testing.assert_array_equal(again.predictions, result.predictions)  # seeded
    head = load_head(save_head(result.head, tmp_path / "age_head"))
    np.testing.assert_allclose(head.predict(x), result.head.predict(x))
    assert np.corrcoef(head.predict(x), age)[0, 1] > 0.95


def test_ridge_classifier_probe_on_planted_sex_beats_chance_and_head_predicts_labels(tmp_path: Path):
    x, names, rng = _features(n=70)
    sex = np.where(x[:, 4] + 0.3 * rng.standard_normal(len(x)) > 0, "F", "M").astype(object)
    assert target_task(sex) == "classification"
    result = run_probe(x, sex, name="sex", feature_names=names, seed=0)
    assert result.metrics["accuracy"] > 0.85 > result.metrics["chance_accuracy"] + 0.2
    assert result.metrics["auc"] > 0.9
    shuffled = run_probe(x, rng.permutation(sex), name="sex", feature_names=names, seed=0)
    assert shuffled.metrics["auc"] < 0.75
    head = load_head(save_head(result.head, tmp_path / "sex"))
    assert head.classes == ["F", "M"]
    assert (head.predict(x) == sex).mean() > 0.85
    np.testing.assert_allclose(head.scores(x).sum(axis=1), 1.0)


def test_head_bundle_refuses_tampering_and_wrong_width(tmp_path: Path):
    x, names, _ = _features(n=30)
    result = run_probe(x, x[:, 0] * 3, name="y", feature_names=names)
    path = save_head(result.head, tmp_path / "h")
    with pytest.raises(InputDataError, match="expects 11 features"):
        load_head(path).predict(x[:, :5])
    data = bytearray((path / "head.safetensors").read_bytes())
    data[-1] ^= 1
    (path / "head.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputDataError, match="sha256"):
        load_head(path)


def test_network_identification_recovers_planted_networks(tmp_path: Path):
    rng = np.random.default_rng(1)
    networks = [f"net{i % 5}" for i in range(53)]
    centres = rng.standard_normal((5, 16)) * 3
    emb = np.stack([centres[int(n[-1])] for n in networks]) + rng.standard_normal((4, 53, 16))
    result = identify_networks(emb, networks, seed=0)
    assert result.n_clusters == 5 and result.adjusted_rand > 0.95 and result.normalized_mutual_info > 0.95
    noise = identify_networks(rng.standard_normal((53, 16)), networks, seed=0)
    assert noise.adjusted_rand < 0.2
    figure = plot_contingency(result, tmp_path / "networks.svg")
    assert figure.read_text().startswith("<?xml")


def _estimator(task: str, seed: int, inner_folds: int, n_features: int):
    """scikit-learn's nested probe that :mod:`pipelines.group.nested_ridge` computes in kernel form."""
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "regression":
        model, name, cv = Ridge(), "ridge", KFold(inner_folds, shuffle=True, random_state=seed)
    else:
        model, name, cv = (
            RidgeClassifier(),
            "ridgeclassifier",
            StratifiedKFold(inner_folds, shuffle=True, random_state=seed),
        )
    grid = {f"{name}__alpha": alpha_grid(n_features)}
    return GridSearchCV(make_pipeline(StandardScaler(), model), grid, cv=cv)


@pytest.mark.parametrize("kind", ["regression", "two classes", "three classes"])
def test_kernel_form_gives_scikit_learns_nested_cross_validation(kind):
    from sklearn.model_selection import KFold, StratifiedKFold

    rng = np.random.default_rng(4)
    x = rng.standard_normal((29, 37))
    x[:, 5] = 2.0  # a constant column: scaled by one, as StandardScaler does
    task = "regression" if kind == "regression" else "classification"
    if task == "regression":
        y = 3 * x[:, 1] + 2 * rng.standard_normal(29)
    else:
        names = np.array(["a", "b", "c"][: 2 if kind == "two classes" else 3])
        y = names[(np.abs(x[:, 2] + rng.standard_normal(29)) * len(names) / 3).astype(int).clip(0, len(names) - 1)]
    scored = score_probe(x, y, name="y", seed=2, permutations=0)
    ours = scored.predictions
    splitter = (KFold if task == "regression" else StratifiedKFold)(scored.outer_folds, shuffle=True, random_state=2)
    expected = np.empty(29, dtype=y.dtype)
    for train, test in splitter.split(x, y):
        estimator = _estimator(task, 2, scored.inner_folds, x.shape[1])
        expected[test] = estimator.fit(x[train], y[train]).predict(x[test])
    if task == "regression":
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)
    else:
        assert (ours == expected).all()
    # the head refit on all rows is scikit-learn's refit too
    head = run_probe(x, y, name="y", feature_names=[str(i) for i in range(37)], seed=2, permutations=0).head
    refit = _estimator(task, 2, scored.inner_folds, x.shape[1]).fit(x, y)
    assert head.metadata["best_params"]["alpha"] == pytest.approx(
        refit.best_params_[f"{refit.estimator.steps[-1][0]}__alpha"]
    )
    if task == "regression":
        np.testing.assert_allclose(head.predict(x), refit.predict(x), rtol=1e-9, atol=1e-9)
    else:
        assert (head.predict(x) == refit.predict(x)).all()
    assert alpha_grid(37)[0] == pytest.approx(0.0037)


def test_permutation_p_and_interval_separate_a_planted_effect_from_noise():
    x, _, rng = _features(n=40)
    age = 40 + 8 * x[:, 2] + 4 * rng.standard_normal(len(x))
    planted = score_probe(x, age, name="age", seed=0, permutations=500).metrics
    assert planted["permutation_p"] <= 2 / 501  # no shuffle of 500 reaches the real r
    low, high = planted["interval95"]
    assert 0.3 < low < planted["pearson_r"] < high <= 1.0
    noise = score_probe(x, rng.permutation(age), name="age", seed=0, permutations=500).metrics
    assert noise["permutation_p"] > 0.05 and noise["interval95"][0] < 0 < noise["interval95"][1] + 0.3
    again = score_probe(x, age, name="age", seed=0, permutations=500).metrics
    assert again == planted  # seeded shuffles and resamples
    assert smallest_detectable_r(8) == pytest.approx(0.621, abs=1e-3)
    assert smallest_detectable_r(40) == pytest.approx(0.264, abs=1e-3)


def test_a_nearly_constant_column_does_not_blow_up_the_predictions():
    """An edge with one streamline in all participants but one: volumes make it differ only at 1e-9."""
    x, _, rng = _features(n=24)
    x[:, 0] = 1.0 + 1e-9 * rng.standard_normal(24)
    x[5, 0] = 3.0
    age = 40 + 8 * x[:, 2] + 4 * rng.standard_normal(24)
    predicted = score_probe(x, age, name="age", seed=0, permutations=0).predictions
    assert np.abs(predicted - age.mean()).max() < 5 * age.std()  # without the spread floor: about 1e8
