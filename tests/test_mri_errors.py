"""Bad MRI inputs: each is a DataError, raised while loading (before training), naming subject and file."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ae_batch.data.mri import check_mri_headers, discover_mri_subjects, load_mri_cohort
from ae_batch.errors import DataError

SHAPE = (16, 16, 16)


def _volume(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    data = np.zeros(shape, dtype=np.float32)
    core = tuple(slice(3, n - 3) for n in shape[:3])
    data[core] = np.random.default_rng(seed).uniform(10, 100, data[core].shape)
    return data


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _brats(root: Path, n: int = 3) -> Path:
    """Tiny BraTS 2021 cohort: t1 + seg per subject, tumour on the left."""
    for i in range(n):
        sid = f"BraTS2021_{i:05d}"
        _save(root / sid / f"{sid}_t1.nii.gz", _volume(i))
        seg = np.zeros(SHAPE, dtype=np.uint8)
        seg[4:7, 6:9, 6:9] = 2
        _save(root / sid / f"{sid}_seg.nii.gz", seg)
    return root


def _file(root: Path, i: int, kind: str = "t1") -> Path:
    sid = f"BraTS2021_{i:05d}"
    return root / sid / f"{sid}_{kind}.nii.gz"


def _load(root: Path, **kwargs: object) -> None:
    load_mri_cohort(root, spatial_size=(8, 8, 8), progress=False, **kwargs)


def test_valid_tiny_cohort_loads(tmp_path: Path) -> None:
    c = load_mri_cohort(_brats(tmp_path), spatial_size=(8, 8, 8), progress=False)
    assert c.volumes.shape == (3, 1, 8, 8, 8)
    np.testing.assert_array_equal(c.laterality, [1.0, 1.0, 1.0])  # tumour at x 4..6, brain centre 7.5


def test_truncated_gzip_names_subject_and_file(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    path = _file(root, 1)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    # The header survives the truncation, but the header check compares the gzip trailer's length with
    # what the header promises, so the cut is found without reading voxels.
    with pytest.raises(DataError) as err:
        check_mri_headers(discover_mri_subjects(root), "brats2021")
    msg = str(err.value)
    assert msg.startswith(f"{path}: subject BraTS2021_00001: the file is truncated or corrupt")
    assert "16736 bytes (header and voxels)" in msg and "EOFError" in msg
    assert "BraTS2021_00000" not in msg and "BraTS2021_00002" not in msg
    with pytest.raises(DataError, match="truncated"):
        _load(root)


def test_corrupt_voxel_data_names_subject_and_file(tmp_path: Path) -> None:
    """Damage the header check cannot see (length intact) fails when the voxels are read, named."""
    root = _brats(tmp_path)
    path = _file(root, 2)
    blob = bytearray(path.read_bytes())
    for i in range(len(blob) // 2, len(blob) // 2 + 64):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))
    check_mri_headers(discover_mri_subjects(root), "brats2021")  # trailer intact: passes
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)  # here the garbled stream decodes to NaN voxels (no gzip CRC check on the way)
    assert msg.startswith(f"{path}: subject BraTS2021_00002: ") and "BraTS2021_00000" not in msg


def test_non_gzip_file_fails_header_check(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    path = _file(root, 2)
    path.write_bytes(gzip.decompress(path.read_bytes()))  # plain .nii under a .nii.gz name
    with pytest.raises(DataError) as err:
        check_mri_headers(discover_mri_subjects(root), "brats2021")
    assert "BraTS2021_00002" in str(err.value) and str(path) in str(err.value) and "gzip" in str(err.value)


def test_4d_image_where_3d_expected_says_what_to_set(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    _save(_file(root, 0), _volume(0, (*SHAPE, 4)))
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)
    assert "BraTS2021_00000" in msg and str(_file(root, 0)) in msg
    assert "4D image with 4 volumes" in msg and "set modality to one of t1, t1ce, t2, flair" in msg


def test_4d_in_manifest_asks_for_a_channel_and_then_loads(tmp_path: Path) -> None:
    _save(tmp_path / "a.nii.gz", _volume(0, (*SHAPE, 3)))
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"subject_id": ["a"], "image": ["a.nii.gz"]}).to_csv(manifest, index=False)
    with pytest.raises(
        DataError, match=r"a\.nii\.gz: subject a: 4D image with 3 volumes.*'channel' column \(0\.\.2\)"
    ):
        _load(manifest)
    pd.DataFrame({"subject_id": ["a"], "image": ["a.nii.gz"], "channel": [5]}).to_csv(manifest, index=False)
    with pytest.raises(DataError, match="volume index 5 requested but the 4D image has 3 volumes"):
        _load(manifest)
    pd.DataFrame({"subject_id": ["a"], "image": ["a.nii.gz"]}).to_csv(manifest, index=False)
    _load(manifest, modality="2")  # a numeric modality picks the volume for rows without a channel


def test_nan_voxels_are_an_error_with_a_count(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    data = _volume(1)
    data[5, 5, 5:8] = np.nan
    data[9, 9, 9] = np.inf
    _save(_file(root, 1), data)
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)
    assert "BraTS2021_00001" in msg and str(_file(root, 1)) in msg and "4 NaN/Inf voxel(s)" in msg


def test_singular_affine(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    singular = np.eye(4)
    singular[0, 0] = 0.0
    header.set_sform(singular, code=1)  # nibabel cannot even build a qform from this
    nib.save(nib.Nifti1Image(_volume(0), None, header=header), _file(root, 0))
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)
    assert "BraTS2021_00000" in msg and str(_file(root, 0)) in msg and "singular" in msg


def test_missing_modality_file_names_the_expected_path(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    with pytest.raises(DataError) as err:
        _load(root, modality="t1ce")
    msg = str(err.value)
    assert "3 subject(s) lack the t1ce" in msg
    assert str(_file(root, 1, "t1ce")) in msg and "BraTS2021_00001_t1.nii.gz" in msg  # expected + found


def test_segmentation_shape_mismatch(tmp_path: Path) -> None:
    root = _brats(tmp_path)
    _save(_file(root, 2, "seg"), np.zeros((16, 16, 15), np.uint8))
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)
    assert "BraTS2021_00002" in msg and str(_file(root, 2, "seg")) in msg and str(_file(root, 2)) in msg
    assert "(16, 16, 15)" in msg and "(16, 16, 16)" in msg


def test_subjects_csv_mismatch_both_directions(tmp_path: Path) -> None:
    root = _brats(tmp_path / "imgs")
    csv = tmp_path / "sex.csv"
    pd.DataFrame(
        {"subject_id": ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00099"], "sex": ["F", "M", "F"]}
    ).to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        _load(root, subjects_csv=csv)
    msg = str(err.value)
    assert msg.startswith(f"{csv}: the subjects CSV and the images disagree")
    assert f"1 subject(s) with images under {root} have no row: ['BraTS2021_00002']" in msg
    assert f"(first: subject BraTS2021_00002, image {_file(root, 2)})" in msg
    assert "1 subject(s) in column 'subject_id' have no image" in msg and "['BraTS2021_00099']" in msg
    assert "(first: subject BraTS2021_00099, line 4)" in msg
    pd.DataFrame({"subject_id": ["BraTS2021_00000"], "gender": ["F"]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"lacks column 'sex' \(sex_column\); found columns"):
        _load(root, subjects_csv=csv)


def test_header_problems_are_all_reported_before_any_voxel_is_read(tmp_path: Path) -> None:
    root = _brats(tmp_path, n=4)
    data = _volume(0)
    data[5, 5, 5] = np.nan
    _save(_file(root, 0), data)  # a voxel-level problem in the first subject
    _save(_file(root, 2), _volume(2, (*SHAPE, 2)))  # header-level problems later in the list
    _save(_file(root, 3, "seg"), np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        _load(root)
    msg = str(err.value)
    assert msg.startswith("2 MRI input problems")
    assert "BraTS2021_00002" in msg and "BraTS2021_00003" in msg
    assert "BraTS2021_00000" not in msg  # headers are checked for everyone before any data is read
