"""Atlas resampled (nearest neighbour) to the BOLD grid, cached per grid."""

import nibabel as nib
import numpy as np
import pytest

from pipelines.errors import InputDataError
from pipelines.fmri.atlas_grid import atlas_on_grid, resample_labels_nearest


def test_nearest_resampling_picks_the_atlas_voxel_at_each_centre():
    fine = np.arange(14 * 16 * 18, dtype=np.int32).reshape(14, 16, 18)
    fine_affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    coarse_affine = fine_affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    out = resample_labels_nearest(nib.Nifti1Image(fine, fine_affine), (7, 8, 9), coarse_affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj), fine[::2, ::2, ::2])


def test_voxels_outside_the_atlas_field_of_view_are_background():
    atlas = nib.Nifti1Image(np.full((3, 4, 5), 7, dtype=np.int16), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0  # target voxel x maps to atlas x + 2
    out = np.asarray(resample_labels_nearest(atlas, (3, 4, 5), shifted).dataobj)
    assert (out[0] == 7).all() and (out[1:] == 0).all()


def test_cached_once_per_grid(tmp_path):
    atlas = tmp_path / "atlas.nii.gz"
    nib.Nifti1Image(np.arange(14 * 16 * 18, dtype=np.int16).reshape(14, 16, 18) % 5, np.eye(4)).to_filename(atlas)
    grid_a, grid_b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    nib.Nifti1Image(np.zeros((7, 8, 9), np.uint8), np.diag([2.0, 2, 2, 1])).to_filename(grid_a)
    nib.Nifti1Image(np.zeros((5, 6, 7), np.uint8), np.diag([3.0, 3, 3, 1])).to_filename(grid_b)
    first = atlas_on_grid(atlas, grid_a, cache_dir=tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    again = atlas_on_grid(atlas, grid_a, cache_dir=tmp_path / "cache")
    other = atlas_on_grid(atlas, grid_b, cache_dir=tmp_path / "cache")
    assert again == first and again.stat().st_mtime_ns == stamp
    assert other != first and nib.load(other).shape == (5, 6, 7)


def test_probabilistic_atlas_is_refused(tmp_path):
    atlas = tmp_path / "prob.nii.gz"
    nib.Nifti1Image(np.full((3, 4, 5), 0.4, dtype=np.float32), np.eye(4)).to_filename(atlas)
    reference = tmp_path / "ref.nii.gz"
    nib.Nifti1Image(np.zeros((2, 3, 4), np.uint8), np.eye(4) * 1.5).to_filename(reference)
    with pytest.raises(InputDataError, match="non-integer"):
        atlas_on_grid(atlas, reference, cache_dir=tmp_path)
