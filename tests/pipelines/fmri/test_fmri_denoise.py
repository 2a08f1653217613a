"""Denoising presets remove planted confounds; dummy scans and censoring drop the right frames."""

import numpy as np
import pytest

from pipelines.errors import MissingInputError
from pipelines.fmri.denoise import count_dummy_scans, denoise
from tests.data.fmri import make_confounds, write_confounds

N_FRAMES, N_PARCELS, T_R = 150, 7, 2.0


def _run(tmp_path, **confound_kwargs):
    table, sidecar = make_confounds(N_FRAMES, t_r=T_R, seed=3, **confound_kwargs)
    path = write_confounds(table, sidecar, tmp_path / "sub-01_task-rest_desc-confounds_timeseries.tsv")
    truth = np.random.default_rng(4).standard_normal((N_FRAMES, N_PARCELS))
    return path, table.bfill(), truth  # nilearn fills the NaN first row of derivatives this way


def _centred(series):
    return series - series.mean(axis=0)


def _planted(truth, table, columns, weights=(3.0, -2.0, 1.5)):
    noisy = truth.copy()
    for column, weight in zip(columns, weights, strict=False):
        noisy += weight * table[column].to_numpy()[:, None] * np.linspace(1, 2, N_PARCELS)[None, :]
    return noisy


@pytest.mark.parametrize(
    ("strategy", "planted", "kept_column"),
    [
        ("simple", ["trans_x", "white_matter", "rot_z_derivative1_power2"], "global_signal"),
        ("scrubbing", ["trans_y", "csf_power2", "white_matter_derivative1"], "global_signal"),
        ("compcor", ["a_comp_cor_02", "rot_x", "trans_z_power2"], "white_matter"),
    ],
)
def test_preset_removes_planted_confounds(tmp_path, strategy, planted, kept_column):
    path, table, truth = _run(tmp_path)
    clean_truth = denoise(truth, t_r=T_R, strategy=strategy, confounds_file=path)
    result = denoise(_planted(truth, table, planted), t_r=T_R, strategy=strategy, confounds_file=path)
    assert set(planted) <= set(result.confound_columns)
    assert kept_column not in result.confound_columns
    # the mean of a parcel is kept (confounds are demeaned), so compare fluctuations
    np.testing.assert_allclose(_centred(result.series), _centred(clean_truth.series), atol=1e-6)
    # a confound the preset does not use stays in the series
    leaky = denoise(
        _planted(truth, table, [kept_column], weights=(1.0,)), t_r=T_R, strategy=strategy, confounds_file=path
    )
    assert np.abs(_centred(leaky.series) - _centred(clean_truth.series)).max() > 0.5


def test_scrubbing_censors_high_motion_frames_and_short_segments(tmp_path):
    path, _, truth = _run(tmp_path, high_motion_frames=(60, 63))
    result = denoise(truth, t_r=T_R, strategy="scrubbing", confounds_file=path)
    # 60 and 63 exceed FD 0.5 mm; 61-62 form a segment shorter than 5 frames
    assert result.censored_frames == [60, 61, 62, 63]
    assert result.series.shape == (N_FRAMES - 4, N_PARCELS)
    assert not np.isin([60, 61, 62, 63], result.frames).any()


def test_none_keeps_series_and_drops_dummy_scans_from_confounds(tmp_path):
    path, _, truth = _run(tmp_path, n_dummy=3)
    result = denoise(truth, t_r=T_R, strategy="none", confounds_file=path)
    assert (result.dummy_scans, result.dummy_scans_source) == (3, "confounds")
    np.testing.assert_array_equal(result.frames, np.arange(3, N_FRAMES))
    np.testing.assert_array_equal(result.series, truth[3:])


def test_dummy_scans_option_overrides_the_confounds(tmp_path):
    path, _, truth = _run(tmp_path, n_dummy=3)
    result = denoise(truth, t_r=T_R, strategy="simple", confounds_file=path, dummy_scans=5)
    assert (result.dummy_scans, result.dummy_scans_source) == (5, "option")
    assert result.frames[0] == 5 and result.series.shape == (N_FRAMES - 5, N_PARCELS)


def test_simple_strategy_drops_nilearn_non_steady_state_frames(tmp_path):
    path, _, truth = _run(tmp_path, n_dummy=2)
    result = denoise(truth, t_r=T_R, strategy="simple", confounds_file=path)
    assert result.dummy_scans == 2 and result.censored_frames == []
    np.testing.assert_array_equal(result.frames, np.arange(2, N_FRAMES))


def test_count_dummy_scans_counts_leading_flags_only(tmp_path):
    table, _ = make_confounds(20, n_dummy=4)
    assert count_dummy_scans(table) == 4
    assert count_dummy_scans(table.drop(columns=[c for c in table if c.startswith("non_steady")])) == 0


def test_nan_parcels_stay_nan_and_others_are_cleaned(tmp_path):
    path, table, truth = _run(tmp_path)
    noisy = _planted(truth, table, ["trans_x"])
    noisy[:, 2] = np.nan
    result = denoise(noisy, t_r=T_R, strategy="simple", confounds_file=path)
    assert np.isnan(result.series[:, 2]).all() and np.isfinite(np.delete(result.series, 2, axis=1)).all()


def test_band_pass_removes_out_of_band_sine(tmp_path):
    path, _, _ = _run(tmp_path)
    time = np.arange(N_FRAMES) * T_R
    slow, fast = np.sin(2 * np.pi * 0.05 * time), np.sin(2 * np.pi * 0.2 * time)
    series = np.column_stack([slow + fast] * N_PARCELS)
    result = denoise(series, t_r=T_R, strategy="none", confounds_file=path, band_pass=(0.01, 0.1))
    core = slice(20, -20)  # away from filter edges
    assert np.corrcoef(result.series[core, 0], slow[core])[0, 1] > 0.98
    assert abs(np.corrcoef(result.series[core, 0], fast[core])[0, 1]) < 0.1


def test_missing_confounds_is_a_clear_error():
    with pytest.raises(MissingInputError, match="confounds file"):
        denoise(np.zeros((11, 7)), t_r=2.0, strategy="simple")
