"""Band-limited TR resampling and filling of censored frames."""

import numpy as np
import pytest

from pipelines.fmri.resample import fill_censored_frames, resample_to_tr


def _peak_hz(signal, t_r):
    spectrum = np.abs(np.fft.rfft(signal - signal.mean()))
    return np.fft.rfftfreq(signal.size, t_r)[np.argmax(spectrum)]


@pytest.mark.parametrize(("t_r", "target"), [(2.0, 0.72), (0.72, 2.0), (0.8, 0.72)])
def test_sine_keeps_its_frequency(t_r, target):
    n_frames = int(600 / t_r)
    time = np.arange(n_frames) * t_r
    series = np.column_stack([np.sin(2 * np.pi * 0.05 * time), np.cos(2 * np.pi * 0.08 * time)])  # (T, 2)
    out = resample_to_tr(series, t_r, target)
    assert out.shape == (int(np.ceil(n_frames * t_r / target - 1e-9)), 2)
    resolution = 1 / (out.shape[0] * target)
    assert abs(_peak_hz(out[:, 0], target) - 0.05) <= resolution
    assert abs(_peak_hz(out[:, 1], target) - 0.08) <= resolution
    new_time = np.arange(out.shape[0]) * target
    core = (new_time > 30) & (new_time < new_time[-1] - 30)
    np.testing.assert_allclose(out[core, 0], np.sin(2 * np.pi * 0.05 * new_time[core]), atol=0.02)


def test_downsampling_suppresses_frequencies_above_the_new_nyquist():
    t_r, target = 0.72, 2.0
    time = np.arange(1000) * t_r
    out = resample_to_tr(np.sin(2 * np.pi * 0.4 * time)[:, None], t_r, target)  # 0.4 Hz > 0.25 Hz Nyquist
    assert np.abs(out[20:-20]).max() < 0.05


def test_same_tr_is_identity_and_nan_columns_stay_nan():
    series = np.random.default_rng(0).standard_normal((11, 7))
    np.testing.assert_array_equal(resample_to_tr(series, 2.0, 2.0), series)
    series[:, 3] = np.nan
    out = resample_to_tr(series, 2.0, 1.0)
    assert out.shape == (22, 7) and np.isnan(out[:, 3]).all() and np.isfinite(np.delete(out, 3, axis=1)).all()


def test_censored_frames_are_linearly_interpolated():
    frames = np.array([2, 3, 6, 7])
    series = np.array([[0.0], [1.0], [4.0], [5.0]])
    regular, filled = fill_censored_frames(series, frames)
    np.testing.assert_allclose(regular[:, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(filled, [False, False, True, True, False, False])
