"""Endpoint counting, parcel volumes, the signed transform and the relmat TSV, on hand-made streamlines."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipelines.dmri.connectome import (
    SIGNED_TRANSFORM,
    count_connectome,
    endpoint_labels,
    parcel_volumes,
    signed_connectome,
    write_relmat,
)

LABELS = [4, 9, 17]  # deliberately not 1..R


@pytest.fixture
def atlas_img():
    """7 x 8 x 9 grid, 2 mm voxels, origin shifted; label 4 at x<2, 9 at x>=5, 17 at a single corner voxel."""
    atlas = np.zeros((7, 8, 9), dtype=np.int16)
    atlas[:2] = 4
    atlas[5:] = 9
    atlas[3, 7, 8] = 17
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, -3.0]
    return nib.Nifti1Image(atlas, affine)


def _world(img, *voxels):
    return np.asarray(voxels, float) @ img.affine[:3, :3].T + img.affine[:3, 3]


def test_counts_are_symmetric_with_zero_diagonal_and_label_order(atlas_img):
    streamlines = [
        _world(atlas_img, (0, 1, 1), (3, 1, 1), (6, 1, 1)),  # 4 -> 9
        _world(atlas_img, (6, 2, 2), (0, 2, 2)),  # 9 -> 4
        _world(atlas_img, (0, 3, 3), (3, 7, 8)),  # 4 -> 17
        _world(atlas_img, (0, 3, 3), (1, 5, 5)),  # 4 -> 4: not counted
        _world(atlas_img, (3, 0, 0), (6, 0, 0)),  # unlabelled -> 9 with the search off: not counted
    ]
    counts = count_connectome(streamlines, atlas_img, LABELS, search_mm=0.0)
    np.testing.assert_array_equal(counts, [[0, 2, 1], [2, 0, 0], [1, 0, 0]])


def test_endpoint_one_voxel_short_of_a_parcel_is_assigned_within_the_search_radius(atlas_img):
    short = [_world(atlas_img, (2, 4, 4), (4, 4, 4))]  # both ends 2 mm from labels 4 and 9
    np.testing.assert_array_equal(
        endpoint_labels(short, np.asarray(atlas_img.dataobj), atlas_img.affine, search_mm=2.0), [[4, 9]]
    )
    np.testing.assert_array_equal(
        endpoint_labels(short, np.asarray(atlas_img.dataobj), atlas_img.affine, search_mm=1.9), [[0, 0]]
    )


def test_endpoint_outside_the_grid_counts_as_unlabelled(atlas_img):
    outside = [_world(atlas_img, (-5, 1, 1), (6, 1, 1))]
    assert count_connectome(outside, atlas_img, LABELS).sum() == 0


def test_parcel_volumes_count_only_mask_voxels_in_mm3(atlas_img):
    mask = np.zeros((7, 8, 9), np.uint8)
    mask[:, :4] = 1  # half of each slab along y, the corner voxel of 17 is outside
    volumes = parcel_volumes(atlas_img, nib.Nifti1Image(mask, atlas_img.affine), LABELS)
    np.testing.assert_allclose(volumes, [2 * 4 * 9 * 8.0, 2 * 4 * 9 * 8.0, 0.0])


def test_signed_connectome_is_log10_count_per_mean_volume():
    counts = np.array([[0, 50, 0], [50, 0, 3], [0, 3, 0]])
    volumes = np.array([100.0, 300.0, 20.0])
    signed = signed_connectome(counts, volumes)
    expected = np.array(
        [[0, np.log10(50 / 200), 0], [np.log10(50 / 200), 0, np.log10(3 / 160)], [0, np.log10(3 / 160), 0]]
    )
    np.testing.assert_allclose(signed, expected)
    assert signed[0, 1] < 0  # fewer than one streamline per mm^3 is negative


def test_the_pipeline_writes_the_transform_that_bundles_declare():
    from brainsymphony.bundle import SIGNED_TRANSFORM as BUNDLE_DEFAULT

    assert SIGNED_TRANSFORM == BUNDLE_DEFAULT == "log10_count_per_volume"


def test_relmat_tsv_has_node_column_names_and_na_for_missing(tmp_path):
    path = write_relmat(
        np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]]),
        ["A", "B", "C"],
        tmp_path / "x.tsv",
        missing=np.array([False, False, True]),
        integer=True,
    )
    assert path.read_text().splitlines() == ["Node\tA\tB\tC", "A\t0\t2\tn/a", "B\t2\t0\tn/a", "C\tn/a\tn/a\tn/a"]
