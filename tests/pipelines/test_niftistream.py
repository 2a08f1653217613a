"""Sequential block reading of 4D NIfTI equals nibabel's full read, for gz, plain, and scaled files."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.niftistream import iter_raw_values, iter_volume_blocks


@pytest.mark.parametrize(
    "suffix, dtype, slope", [(".nii.gz", np.float32, None), (".nii", np.float32, None), (".nii.gz", np.int16, 0.5)]
)
def test_blocks_equal_nibabel(tmp_path: Path, suffix, dtype, slope):
    data = np.random.default_rng(0).normal(100, 10, (7, 8, 9, 11)).astype(dtype)
    img = nib.Nifti1Image(data, np.eye(4))
    if slope:
        img.header.set_slope_inter(slope, 3.0)
    path = tmp_path / f"x{suffix}"
    nib.save(img, path)
    expected = nib.load(path).get_fdata()
    blocks = list(iter_volume_blocks(path, chunk=4))
    assert [start for start, _ in blocks] == [0, 4, 8]
    assert [b.shape for _, b in blocks] == [(7, 8, 9, 4), (7, 8, 9, 4), (7, 8, 9, 3)]
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks], axis=3), expected)
    assert sum(v.size for v in iter_raw_values(path, block_bytes=64)) == data.size


def test_truncated_file_is_reported(tmp_path: Path):
    path = tmp_path / "x.nii"
    nib.save(nib.Nifti1Image(np.ones((7, 8, 9, 5), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="ends early"):
        list(iter_volume_blocks(path, chunk=2))
