"""Windows of T frames: counts, starts and contents at the edges."""

import numpy as np

from pipelines.fmri.windows import cut_windows


def _series(n_frames, n_parcels=7):
    return np.arange(n_frames * n_parcels, dtype=float).reshape(n_frames, n_parcels)


def test_non_overlapping_windows_drop_the_tail():
    series = _series(11)
    windows, starts = cut_windows(series, 5)
    assert windows.shape == (2, 7, 5) and windows.dtype == np.float32
    np.testing.assert_array_equal(starts, [0, 5])
    np.testing.assert_array_equal(windows[1], series[5:10].T)


def test_stride_gives_overlapping_windows():
    windows, starts = cut_windows(_series(11), 5, stride=3)
    np.testing.assert_array_equal(starts, [0, 3, 6])
    np.testing.assert_array_equal(windows[2, :, -1], _series(11)[10])


def test_exactly_one_window_and_too_short():
    assert cut_windows(_series(5), 5)[0].shape == (1, 7, 5)
    windows, starts = cut_windows(_series(4), 5)
    assert windows.shape == (0, 7, 5) and starts.shape == (0,)
