"""Gradient-table and brain-mask checks: each defect gives its own InputDataError naming the file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table

from pipelines.dmri.gradients import check_gradients, count_directions, sh_order_for
from pipelines.dmri.mask import brain_mask
from pipelines.errors import InputDataError, MissingInputError
from simulation.phantom import crossing_phantom, hemisphere_directions
from tests.data.dmri import write_gradients, write_phantom, write_small_64d


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("phantom"), crossing_phantom(shape=(13, 11, 9)))


def test_real_small_64d_table_is_accepted_with_64_directions(tmp_path):
    files = write_small_64d(tmp_path)
    gtab = check_gradients(files.dwi, files.bval, files.bvec)
    assert len(gtab.bvals) == 65
    assert int(gtab.b0s_mask.sum()) == 1
    assert count_directions(gtab.bvecs[~gtab.b0s_mask]) == 64
    np.testing.assert_allclose(np.linalg.norm(gtab.bvecs[~gtab.b0s_mask], axis=1), 1.0, atol=1e-6)


def test_volume_count_mismatch_names_all_three_counts(phantom_files, tmp_path):
    bvals = np.loadtxt(phantom_files.bval)[:-1]
    bvecs = np.loadtxt(phantom_files.bvec).T[:-1]
    bval, bvec = write_gradients(tmp_path, bvals, bvecs)
    with pytest.raises(InputDataError, match=r"image has 32 volumes but dwi.bval lists 31 b-values"):
        check_gradients(phantom_files.dwi, bval, bvec)


def test_non_unit_bvector_is_refused_with_its_volume(phantom_files, tmp_path):
    bvecs = np.loadtxt(phantom_files.bvec).T
    bvecs[5] *= 0.5
    bval, bvec = write_gradients(tmp_path, np.loadtxt(phantom_files.bval), bvecs)
    with pytest.raises(InputDataError, match=r"not unit length \(volume 5 has length 0.500\)") as err:
        check_gradients(phantom_files.dwi, bval, bvec)
    assert str(bvec) in str(err.value)


def test_missing_b0_is_refused(phantom_files, tmp_path):
    bvals = np.loadtxt(phantom_files.bval)
    bvals[bvals == 0] = 1000
    bvecs = np.vstack([hemisphere_directions(34)[:2], np.loadtxt(phantom_files.bvec).T[2:]])
    bval, bvec = write_gradients(tmp_path, bvals, bvecs)
    with pytest.raises(InputDataError, match="no b0 volume"):
        check_gradients(phantom_files.dwi, bval, bvec)


def test_too_few_directions_is_refused(phantom_files, tmp_path):
    bvecs = np.loadtxt(phantom_files.bvec).T
    five = hemisphere_directions(5)
    bvecs[2:] = five[np.arange(30) % 5]  # 30 volumes, only 5 distinct directions
    bval, bvec = write_gradients(tmp_path, np.loadtxt(phantom_files.bval), bvecs)
    with pytest.raises(InputDataError, match="only 5 distinct diffusion direction"):
        check_gradients(phantom_files.dwi, bval, bvec)


def test_transposed_bvec_gets_a_hint(phantom_files, tmp_path):
    bvec = tmp_path / "t.bvec"
    np.savetxt(bvec, np.loadtxt(phantom_files.bvec).T)
    with pytest.raises(InputDataError, match="looks transposed"):
        check_gradients(phantom_files.dwi, phantom_files.bval, bvec)


def test_absent_bval_file_is_a_missing_input(phantom_files, tmp_path):
    with pytest.raises(MissingInputError, match="nope.bval: file not found"):
        check_gradients(phantom_files.dwi, tmp_path / "nope.bval", phantom_files.bvec)


def test_antipodal_and_repeated_directions_count_once():
    base = hemisphere_directions(7)
    assert count_directions(np.vstack([base, -base, base])) == 7


@pytest.mark.parametrize(("n_dirs", "order"), [(6, 2), (14, 2), (15, 4), (27, 4), (28, 6), (44, 6), (45, 8), (200, 8)])
def test_sh_order_fits_the_direction_count(n_dirs, order):
    assert sh_order_for(n_dirs) == order


def test_empty_mask_file_is_refused(phantom_files, tmp_path):
    img = nib.load(phantom_files.dwi)
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine), empty)
    gtab = check_gradients(phantom_files.dwi, phantom_files.bval, phantom_files.bvec)
    with pytest.raises(InputDataError, match="brain mask has 0 voxels"):
        brain_mask(np.asarray(img.dataobj), gtab, mask_file=empty, dwi_affine=img.affine)


def test_mask_on_another_grid_is_refused(phantom_files, tmp_path):
    img = nib.load(phantom_files.dwi)
    other = tmp_path / "other_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((7, 8, 9), np.uint8), img.affine), other)
    gtab = check_gradients(phantom_files.dwi, phantom_files.bval, phantom_files.bvec)
    with pytest.raises(InputDataError, match=r"not on the grid .*\(mask shape \(7, 8, 9\), DWI shape \(13, 11, 9\)"):
        brain_mask(np.asarray(img.dataobj), gtab, mask_file=other, dwi_affine=img.affine)


def test_dwi_without_mask_and_without_signal_is_refused(phantom_files):
    gtab = check_gradients(phantom_files.dwi, phantom_files.bval, phantom_files.bvec)
    with pytest.raises(InputDataError, match="no brain found in the mean b0"):
        brain_mask(np.zeros((13, 11, 9, 32), np.float32), gtab, dwi_file="blank_dwi.nii.gz")


def test_otsu_mask_recovers_the_phantom_brain():
    phantom = crossing_phantom()  # 23 x 19 x 15: the median filter only rounds the box's corners
    gtab = gradient_table(phantom.bvals, bvecs=phantom.bvecs)
    mask = brain_mask(phantom.dwi, gtab)
    assert (mask & ~phantom.mask).sum() == 0
    dice = 2 * (mask & phantom.mask).sum() / (mask.sum() + phantom.mask.sum())
    assert dice > 0.93
