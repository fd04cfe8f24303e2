"""Laterality: exact values on hand-made arrays, orientation invariance, and the synthetic ground truth."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ae_batch.data.laterality import laterality_score, midline_x
from ae_batch.data.synthetic_mri import synthesize_mri_cohort


def test_exact_value_from_known_voxel_counts() -> None:
    seg = np.zeros((10, 3, 3), dtype=np.uint8)
    brain = np.ones_like(seg, dtype=bool)  # centroid x index 4.5 -> world x 4.5 with the identity affine
    seg[1, 0, :] = 1  # 3 voxels at x = 1: left (RAS: smaller x)
    seg[8, 1, 1] = 4  # 1 voxel at x = 8: right
    assert laterality_score(seg, np.eye(4), brain) == pytest.approx(0.5, abs=1e-12)  # (3 - 1) / 4


def test_voxels_on_the_midline_count_half_to_each_side() -> None:
    seg = np.zeros((9, 2, 2), dtype=np.uint8)  # odd width: centroid x index 4 exactly
    seg[0, 0, 0] = seg[1, 0, 0] = seg[2, 0, 0] = 2  # 3 left
    seg[6, 0, 0] = 2  # 1 right
    seg[4, 0, 0] = 1  # 1 on the plane
    assert laterality_score(seg, np.eye(4), np.ones(seg.shape, bool)) == pytest.approx(0.4, abs=1e-12)


def test_midline_follows_brain_centroid_not_array_centre() -> None:
    brain = np.zeros((20, 4, 4), dtype=bool)
    brain[2:8] = True  # brain occupies x 2..7: midline at 4.5, far from the array centre 9.5
    seg = np.zeros(brain.shape, dtype=np.uint8)
    seg[6, 1, 1] = 1  # right of the brain midline, left of the array centre
    assert midline_x(seg.shape, np.eye(4), brain) == pytest.approx(4.5)
    assert laterality_score(seg, np.eye(4), brain) == -1.0
    assert laterality_score(seg, np.eye(4)) == 1.0  # without a mask: field-of-view centre 9.5


def test_sides_come_from_the_affine_not_from_indices() -> None:
    seg = np.zeros((10, 3, 3), dtype=np.uint8)
    seg[1, 1, 1] = 1
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[0, 3] = 9.0  # index i -> world x = 9 - i: index 1 lies at x = 8, right of the midline x = 4.5
    assert laterality_score(seg, np.eye(4)) == 1.0
    assert laterality_score(seg, lps) == -1.0


def _flip_to_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flip[1, 3] = data.shape[1] - 1
    return data[::-1, ::-1, :].copy(), affine @ flip


def test_same_volume_in_ras_and_lps_files_scores_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    brain = np.zeros((21, 18, 15), dtype=bool)
    brain[2:19, 3:16, 2:13] = True
    image = np.where(brain, rng.uniform(1, 100, brain.shape), 0).astype(np.float32)
    seg = np.zeros(brain.shape, dtype=np.uint8)
    seg[4:11, 5:9, 4:8] = 2
    seg[9:13, 6:8, 5:7] = 4  # straddles the midline: a score strictly inside (-1, 1)
    ras = np.eye(4)
    ras[:3, :3] *= [0.9, 1.1, 1.3]  # anisotropic voxels
    ras[:3, 3] = [-7.3, 4.0, 11.0]
    scores = []
    for name, (img, sg, aff) in {
        "ras": (image, seg, ras),
        "lps": (*_flip_to_lps(image, ras)[:1], *_flip_to_lps(seg, ras)),
    }.items():
        nib.save(nib.Nifti1Image(img, aff), tmp_path / f"{name}_t1.nii.gz")
        nib.save(nib.Nifti1Image(sg, aff), tmp_path / f"{name}_seg.nii.gz")
        t1 = nib.load(tmp_path / f"{name}_t1.nii.gz")
        s = nib.load(tmp_path / f"{name}_seg.nii.gz")
        assert "".join(nib.aff2axcodes(s.affine)) == name.upper()
        scores.append(laterality_score(np.asanyarray(s.dataobj), s.affine, t1.get_fdata() > 0))
    assert -1.0 < scores[0] < 1.0 and scores[0] > 0.3
    assert scores[1] == pytest.approx(scores[0], abs=1e-6)


def test_permuted_axes_give_the_same_score() -> None:
    seg = np.zeros((12, 9, 7), dtype=np.uint8)
    seg[2:6, 3:5, 2:4] = 1
    seg[7:9, 3:5, 2:4] = 1
    brain = np.ones(seg.shape, dtype=bool)
    expected = laterality_score(seg, np.eye(4), brain)
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 0] = perm[2, 1] = perm[3, 3] = 1  # array axis 2 is world x
    moved = np.transpose(seg, (1, 2, 0))
    assert laterality_score(moved, perm, np.transpose(brain, (1, 2, 0))) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx((16 - 8) / 24)


def test_no_tumour_is_nan_and_bad_inputs_raise() -> None:
    seg = np.zeros((5, 5, 5), dtype=np.uint8)
    assert math.isnan(laterality_score(seg, np.eye(4)))
    singular = np.eye(4)
    singular[0, 0] = 0
    with pytest.raises(ValueError, match="singular"):
        laterality_score(seg, singular)
    with pytest.raises(ValueError, match="shape"):
        laterality_score(seg, np.eye(4), np.ones((4, 5, 5), bool))
    with pytest.raises(ValueError, match="empty"):
        laterality_score(seg, np.eye(4), np.zeros((5, 5, 5), bool))


def test_synthetic_subjects_have_the_documented_side(tmp_path: Path) -> None:
    synthesize_mri_cohort(tmp_path, n_subjects=8, shape=(28, 32, 24), seed=5)
    table = pd.read_csv(tmp_path / "subjects.csv", dtype={"subject_id": str})
    for row in table.itertuples():
        folder = tmp_path / row.subject_id
        seg = nib.load(folder / f"{row.subject_id}_seg.nii.gz")
        t1 = nib.load(folder / f"{row.subject_id}_t1.nii.gz")
        score = laterality_score(np.asanyarray(seg.dataobj), seg.affine, np.asanyarray(t1.dataobj) > 0)
        assert score == pytest.approx(row.laterality, abs=1e-9)
        assert np.sign(score) == (1 if row.tumour_side == "left" else -1), row.subject_id
    assert set(table["orientation"]) == {"RAS", "LPS"}  # both storage orders were scored
