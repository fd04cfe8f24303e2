"""Synthetic MRI cohort: layout, determinism, orientation, contrasts and the documented effects."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ae_batch.data.synthetic_mri import MODALITIES, synthesize_mri_cohort

SHAPE = (28, 32, 24)
N = 12


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic_mri")
    synthesize_mri_cohort(out, n_subjects=N, shape=SHAPE, seed=0)
    return out


def _table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "subjects.csv", dtype={"subject_id": str})


def _canonical(root: Path, sid: str, kind: str) -> np.ndarray:
    return np.asanyarray(nib.as_closest_canonical(nib.load(root / sid / f"{sid}_{kind}.nii.gz")).dataobj)


def test_brats2021_layout_and_subjects_table(cohort: Path) -> None:
    table = _table(cohort)
    assert list(table.columns[:5]) == ["subject_id", "sex", "age", "tumour_side", "laterality"]
    assert table["subject_id"].tolist() == [f"BraTS2021_{i:05d}" for i in range(N)]
    assert sorted(p.name for p in cohort.iterdir()) == sorted([*table["subject_id"], "subjects.csv"])
    sid = "BraTS2021_00003"
    expected = {f"{sid}_{k}.nii.gz" for k in (*MODALITIES, "seg")}
    assert {p.name for p in (cohort / sid).iterdir()} == expected
    img = nib.load(cohort / sid / f"{sid}_t1.nii.gz")
    assert img.shape == SHAPE and img.get_data_dtype() == np.int16
    assert np.allclose(img.header.get_zooms(), 1.0)
    assert (table["sex"].value_counts() == N // 2).all()  # exactly balanced
    assert (table["tumour_side"].value_counts() == N // 2).all()
    assert table["age"].between(25, 80).all()


def test_same_seed_same_bytes_other_seed_differs(cohort: Path, tmp_path: Path) -> None:
    synthesize_mri_cohort(tmp_path / "a", n_subjects=N, shape=SHAPE, seed=0)
    synthesize_mri_cohort(tmp_path / "b", n_subjects=N, shape=SHAPE, seed=1)
    name = "BraTS2021_00002/BraTS2021_00002_flair.nii.gz"
    assert (tmp_path / "a" / name).read_bytes() == (cohort / name).read_bytes()
    assert (tmp_path / "a" / "subjects.csv").read_text() == (cohort / "subjects.csv").read_text()
    assert (tmp_path / "b" / name).read_bytes() != (cohort / name).read_bytes()


def test_a_third_stored_lps_with_consistent_affines(cohort: Path) -> None:
    table = _table(cohort)
    codes = {}
    for sid in table["subject_id"]:
        affines = [nib.load(cohort / sid / f"{sid}_{k}.nii.gz").affine for k in (*MODALITIES, "seg")]
        assert all(np.array_equal(a, affines[0]) for a in affines)
        codes[sid] = "".join(nib.aff2axcodes(affines[0]))
    assert sorted(codes.values()) == sorted(["LPS"] * (N // 3) + ["RAS"] * (N - N // 3))
    assert table.set_index("subject_id")["orientation"].to_dict() == codes
    # Storage order must not move anything in world space: viewed in canonical RAS order (via the
    # affine), every tumour lies on its documented side. Flipping the array without the affine fails.
    for row in table.itertuples():
        seg = _canonical(cohort, row.subject_id, "seg")
        brain = _canonical(cohort, row.subject_id, "t1") > 0
        x_brain = np.nonzero(brain)[0].mean()
        x_tumour = np.nonzero(seg)[0].mean()
        assert (x_tumour < x_brain) == (row.tumour_side == "left"), row.subject_id  # RAS: left = small x


def test_labels_support_and_contrasts(cohort: Path) -> None:
    for sid in ("BraTS2021_00000", "BraTS2021_00007"):
        seg = _canonical(cohort, sid, "seg")
        assert set(np.unique(seg)) == {0, 1, 2, 4}
        img = {m: _canonical(cohort, sid, m).astype(float) for m in MODALITIES}
        brain = img["t1"] > 0
        for m in MODALITIES:
            assert np.array_equal(img[m] > 0, brain)  # same skull-stripped support, background exactly 0
        normal = brain & (seg == 0)
        # t1 and t2 contrasts are inverted (WM bright / CSF dark vs CSF bright / WM dark)
        assert np.corrcoef(img["t1"][normal], img["t2"][normal])[0, 1] < -0.5
        assert img["flair"][seg == 2].mean() > 1.4 * img["flair"][normal].mean()  # edema bright on flair
        csf_like = normal & (img["t2"] > np.percentile(img["t2"][normal], 95))
        assert img["flair"][csf_like].mean() < 0.5 * img["flair"][normal].mean()  # CSF dark on flair
        ratio = {m: img[m][seg == 4].mean() / img[m][normal].mean() for m in ("t1", "t1ce")}
        assert ratio["t1ce"] > 1.5 * ratio["t1"]  # the enhancing ring lights up with contrast


def test_laterality_spans_a_range_and_matches_the_side(cohort: Path) -> None:
    table = _table(cohort)
    sign = np.where(table["tumour_side"] == "left", 1.0, -1.0)
    assert (np.sign(table["laterality"]) == sign).all()
    magnitude = table["laterality"].abs()
    assert magnitude.min() < 0.9 and magnitude.max() > 0.95  # not only +/-1
    assert table["laterality"].between(-1, 1).all()


def test_documented_sex_effect_on_brain_and_ventricles(tmp_path: Path) -> None:
    synthesize_mri_cohort(tmp_path, n_subjects=24, shape=(24, 28, 20), seed=0)
    table = _table(tmp_path)
    male = table["sex"] == "M"
    brain = table["brain_volume_ml"]
    ratio = brain[male].mean() / brain[~male].mean()
    assert 1.03 < ratio < 1.14  # designed 1.08
    vent = table["ventricle_volume_ml"] / brain
    assert vent[male].mean() > vent[~male].mean()  # designed +20 % relative ventricle volume
    # the CSV volumes are what is in the files
    sid = table["subject_id"][0]
    assert (_canonical(tmp_path, sid, "t1") > 0).sum() / 1000.0 == pytest.approx(brain[0])
    assert (_canonical(tmp_path, sid, "seg") > 0).sum() / 1000.0 == pytest.approx(
        table["tumour_volume_ml"][0]
    )


def test_rejects_tiny_grids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        synthesize_mri_cohort(tmp_path, n_subjects=4, shape=(8, 8, 8))
