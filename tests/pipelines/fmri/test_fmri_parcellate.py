"""Parcel means and coverage on a 7x8x9 grid, against brute force and nilearn's NiftiLabelsMasker."""

import warnings

import nibabel as nib
import numpy as np
import pytest

from pipelines.errors import InputDataError
from pipelines.fmri.atlas_grid import atlas_on_grid
from pipelines.fmri.parcellate import build_parcel_operator, parcel_means
from tests.data.fmri import TOY_COVERAGE, TOY_LABELS, build_fmriprep_run


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    run = build_fmriprep_run(root, n_frames=11)
    run["atlas_on_grid"] = atlas_on_grid(run["atlas"], run["bold"], cache_dir=root / "cache")
    return run


def test_parcel_means_equal_in_mask_voxel_means(toy_run):
    means, coverage = parcel_means(toy_run["bold"], toy_run["atlas_on_grid"], toy_run["mask"], TOY_LABELS, chunk=4)
    assert means.shape == (11, 7)
    np.testing.assert_allclose(means, toy_run["voxel_means"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(coverage, TOY_COVERAGE)


def test_chunk_size_does_not_change_the_result(toy_run):
    one, _ = parcel_means(toy_run["bold"], toy_run["atlas_on_grid"], toy_run["mask"], TOY_LABELS, chunk=1)
    all_, _ = parcel_means(toy_run["bold"], toy_run["atlas_on_grid"], toy_run["mask"], TOY_LABELS, chunk=100)
    np.testing.assert_array_equal(one, all_)


def test_uncompressed_memory_mapped_input_gives_same_numbers(toy_run, tmp_path):
    img = nib.load(toy_run["bold"])
    plain = tmp_path / "bold.nii"
    nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header).to_filename(plain)
    means, _ = parcel_means(plain, toy_run["atlas_on_grid"], toy_run["mask"], TOY_LABELS, chunk=3)
    np.testing.assert_allclose(means, toy_run["voxel_means"], rtol=0, atol=1e-9)


def test_matches_nilearn_labels_masker(toy_run):
    from nilearn.maskers import NiftiLabelsMasker

    means, _ = parcel_means(toy_run["bold"], toy_run["atlas_on_grid"], toy_run["mask"], TOY_LABELS)
    masker = NiftiLabelsMasker(
        labels_img=str(toy_run["atlas_on_grid"]),
        mask_img=str(toy_run["mask"]),
        strategy="mean",
        standardize=None,
        resampling_target=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = masker.fit_transform(str(toy_run["bold"]))
    assert reference.shape == (11, 7)
    np.testing.assert_allclose(means, reference, rtol=1e-6)


def test_requested_label_absent_from_atlas_is_nan_with_zero_coverage():
    atlas = np.zeros((7, 8, 9), dtype=int)
    atlas[:3] = 4
    atlas[3:] = 9
    mask = np.ones(atlas.shape)
    mask[5:] = 0
    operator = build_parcel_operator(atlas, mask, [9, 77, 4])
    np.testing.assert_allclose(operator.coverage, [2 / 4, 0.0, 1.0])
    volumes = np.arange(7 * 8 * 9 * 2, dtype=float).reshape(7, 8, 9, 2)
    means = operator.apply(volumes)
    assert np.isnan(means[:, 1]).all()
    np.testing.assert_allclose(means[:, 0], volumes[3:5].reshape(-1, 2).mean(axis=0))
    np.testing.assert_allclose(means[:, 2], volumes[:3].reshape(-1, 2).mean(axis=0))


def test_mask_on_another_grid_is_refused(toy_run, tmp_path):
    wrong = tmp_path / "mask.nii.gz"
    nib.Nifti1Image(np.ones((7, 8, 10), dtype=np.uint8), np.eye(4)).to_filename(wrong)
    with pytest.raises(InputDataError, match="brain mask grid"):
        parcel_means(toy_run["bold"], toy_run["atlas_on_grid"], wrong, TOY_LABELS)
