"""MRI layout discovery (BraTS 2021/2023, MSD, manifest) and loading into one preprocessed array."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ae_batch.data.mri import MriSubject, discover_mri_subjects, load_mri_cohort
from ae_batch.data.mri_layouts import detect_layout
from ae_batch.data.synthetic_mri import synthesize_mri_cohort
from ae_batch.errors import ConfigError

SHAPE = (24, 28, 20)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("brats2021")
    synthesize_mri_cohort(out, n_subjects=6, shape=SHAPE, seed=1)
    return out


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _tiny(seed: int, shape: tuple[int, ...] = (12, 12, 12)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 100, shape).astype(np.float32)


def test_brats2021_auto_aliases_and_hidden_files(cohort: Path) -> None:
    (cohort / ".DS_Store").write_text("x")
    (cohort / "BraTS2021_00000" / "._BraTS2021_00000_t1.nii.gz").write_bytes(b"\x00\x05resource fork")
    assert detect_layout(cohort) == "brats2021"
    subjects = discover_mri_subjects(cohort)
    assert [s.subject_id for s in subjects] == [f"BraTS2021_{i:05d}" for i in range(6)]
    first = subjects[0]
    assert first == MriSubject(
        "BraTS2021_00000",
        cohort / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz",
        cohort / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz",
        None,
        None,
    )
    for alias in ("t1ce", "T1GD", "t1c"):
        assert (
            discover_mri_subjects(cohort, "brats2021", alias)[2].image.name == "BraTS2021_00002_t1ce.nii.gz"
        )
    assert discover_mri_subjects(cohort, modality="t2f")[1].image.name == "BraTS2021_00001_flair.nii.gz"
    with pytest.raises(ConfigError, match="dwi"):
        discover_mri_subjects(cohort, modality="dwi")
    with pytest.raises(ConfigError, match="brats2020"):
        discover_mri_subjects(cohort, layout="brats2020")


def test_brats2023_names_and_missing_seg(tmp_path: Path) -> None:
    for sid, with_seg in (("BraTS-GLI-00002-001", True), ("BraTS-GLI-00000-000", False)):
        for name in ("t1n", "t1c", "t2w", "t2f"):
            _save(tmp_path / sid / f"{sid}-{name}.nii.gz", _tiny(0))
        if with_seg:
            _save(tmp_path / sid / f"{sid}-seg.nii.gz", np.zeros((12, 12, 12), np.uint8))
    assert detect_layout(tmp_path) == "brats2023"
    expected = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
    for modality, name in expected.items():
        subjects = discover_mri_subjects(tmp_path, modality=modality)
        assert [s.image.name for s in subjects] == [
            f"BraTS-GLI-00000-000-{name}.nii.gz",
            f"BraTS-GLI-00002-001-{name}.nii.gz",
        ]
    subjects = discover_mri_subjects(tmp_path, "brats2023")
    assert subjects[0].seg is None
    assert subjects[1].seg == tmp_path / "BraTS-GLI-00002-001" / "BraTS-GLI-00002-001-seg.nii.gz"


def _write_msd(root: Path, with_json: bool = True) -> None:
    for i in (1, 2):
        _save(root / "imagesTr" / f"BRATS_00{i}.nii.gz", _tiny(i, (12, 12, 12, 4)))
        _save(root / "labelsTr" / f"BRATS_00{i}.nii.gz", np.zeros((12, 12, 12), np.uint8))
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    if with_json:
        spec = {
            "name": "BRATS",
            "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "training": [
                {"image": f"./imagesTr/BRATS_00{i}.nii.gz", "label": f"./labelsTr/BRATS_00{i}.nii.gz"}
                for i in (2, 1)
            ],
        }
        (root / "dataset.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("with_json", [True, False])
def test_msd_modality_picks_the_volume_index(tmp_path: Path, with_json: bool) -> None:
    _write_msd(tmp_path, with_json)
    assert detect_layout(tmp_path) == "msd"
    for modality, channel in {"t1": 1, "flair": 0, "t1ce": 2, "T2w": 3, "2": 2}.items():
        subjects = discover_mri_subjects(tmp_path, modality=modality)
        assert [(s.subject_id, s.channel) for s in subjects] == [
            ("BRATS_001", channel),
            ("BRATS_002", channel),
        ]
    s = discover_mri_subjects(tmp_path)[0]
    assert s.image == tmp_path / "imagesTr" / "BRATS_001.nii.gz"
    assert s.seg == tmp_path / "labelsTr" / "BRATS_001.nii.gz"
    c = load_mri_cohort(tmp_path, modality="t1ce", spatial_size=(8, 8, 8), progress=False)
    assert c.volumes.shape == (2, 1, 8, 8, 8) and c.subject_ids == ["BRATS_001", "BRATS_002"]
    assert (c.meta["layout"], c.meta["modality"], c.meta["channel"]) == ("msd", "t1gd", 2)
    assert np.isnan(c.laterality).all() and c.sex is None  # empty label maps: no tumour, no sex source


def test_manifest_paths_sex_channel_and_wrapper_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _save(data / "imgs" / "a.nii.gz", _tiny(0))
    absolute = _save(tmp_path / "elsewhere" / "b.nii.gz", _tiny(1, (12, 12, 12, 2)))
    _save(data / "segs" / "a_seg.nii.gz", np.zeros((12, 12, 12), np.uint8))
    rows = [
        {"pid": "007", "image": "imgs/a.nii.gz", "seg": "segs/a_seg.nii.gz", "gender": "F", "channel": ""},
        {"pid": "003", "image": str(absolute), "seg": "", "gender": "", "channel": "1"},
    ]
    manifest = data / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    assert detect_layout(manifest) == "manifest"
    subjects = discover_mri_subjects(manifest, id_column="pid", sex_column="gender")
    assert subjects == [
        MriSubject("003", absolute, None, 1, None),  # ids stay text: "003" not 3
        MriSubject("007", data / "imgs" / "a.nii.gz", data / "segs" / "a_seg.nii.gz", None, "F"),
    ]
    assert [s.line for s in subjects] == [None, "line 2"]  # where a manifest's sex value came from
    # an unzipped release often sits inside one wrapper folder
    wrapped = tmp_path / "release"
    _save(wrapped / "Wrapper_2021" / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz", _tiny(2))
    assert [s.subject_id for s in discover_mri_subjects(wrapped)] == ["BraTS2021_00001"]


def test_load_cohort_shapes_labels_and_sex_alignment(cohort: Path, tmp_path: Path) -> None:
    table = pd.read_csv(cohort / "subjects.csv", dtype={"subject_id": str})
    shuffled = tmp_path / "sex.csv"
    table.sample(frac=1.0, random_state=0)[["subject_id", "sex"]].to_csv(shuffled, index=False)
    c = load_mri_cohort(
        cohort, modality="flair", subjects_csv=shuffled, spatial_size=(12, 16, 10), progress=False
    )
    assert c.subject_ids == table["subject_id"].tolist()
    assert c.volumes.shape == (6, 1, 12, 16, 10) and c.volumes.dtype == np.float32
    assert c.volumes.min() == 0.0 and c.volumes.max() <= 1.0
    assert (c.volumes.reshape(6, -1).max(axis=1) > 0.5).all()
    assert c.sex.tolist() == table["sex"].tolist() and c.sex.name == "sex"
    np.testing.assert_allclose(c.laterality, table["laterality"].to_numpy(), atol=1e-9)
    m = c.meta
    assert (m["layout"], m["modality"], m["orientation"], m["spatial_size"]) == (
        "brats2021",
        "flair",
        "RAS",
        [12, 16, 10],
    )
    assert m["original_orientation_counts"] == {"RAS": 4, "LPS": 2}
    assert m["seg_labels"] == [0, 1, 2, 4] and m["n_subjects"] == 6 and m["fitted_across_subjects"] is False


def _flip_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.asarray(data.shape[:2]) - 1
    return np.ascontiguousarray(data[::-1, ::-1]), affine @ flip


def test_orientation_and_4d_volume_choice_do_not_change_the_result(cohort: Path, tmp_path: Path) -> None:
    """One subject stored RAS, LPS, axis-permuted and as volume 1 of an MSD-style 4D file: same output."""
    sid = "BraTS2021_00000"
    t1 = nib.load(cohort / sid / f"{sid}_t1.nii.gz")
    seg = nib.load(cohort / sid / f"{sid}_seg.nii.gz")
    assert "".join(nib.aff2axcodes(t1.affine)) == "RAS"
    t1_data, seg_data, aff = np.asanyarray(t1.dataobj), np.asanyarray(seg.dataobj), t1.affine
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1.0  # new axes (z, x, y) -> world (x, y, z)
    variants = {
        "ras": (t1_data, seg_data, aff),
        "lps": (_flip_lps(t1_data, aff)[0], *_flip_lps(seg_data, aff)),
        "perm": (np.transpose(t1_data, (2, 0, 1)), np.transpose(seg_data, (2, 0, 1)), aff @ perm),
    }
    rows = []
    for name, (img, sg, a) in variants.items():
        rows.append({"subject_id": name, "image": _save(tmp_path / f"{name}.nii.gz", img, a).name, "seg": ""})
        rows[-1]["seg"] = _save(tmp_path / f"{name}_seg.nii.gz", sg, a).name
    four_d = np.stack([t1_data * 0 + 7, t1_data, t1_data[::-1], t1_data * 2], axis=-1)
    _save(tmp_path / "msd.nii.gz", four_d, aff)
    msd_seg = np.select([seg_data == 2, seg_data == 1, seg_data == 4], [1, 2, 3], 0).astype(np.uint8)
    _save(tmp_path / "msd_seg.nii.gz", msd_seg, aff)  # MSD label order differs: any label > 0 is tumour
    rows.append({"subject_id": "msd", "image": "msd.nii.gz", "seg": "msd_seg.nii.gz", "channel": 1})
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    c = load_mri_cohort(manifest, spatial_size=(16, 16, 16), progress=False)
    order = {sid: i for i, sid in enumerate(c.subject_ids)}
    ref = c.volumes[order["ras"]]
    for name in ("lps", "perm", "msd"):
        np.testing.assert_allclose(c.volumes[order[name]], ref, atol=1e-5, err_msg=name)
    assert np.ptp(c.laterality) < 1e-9 and abs(c.laterality[0]) > 0.1
    assert sorted(c.meta["original_orientation"]) == ["LPS", "RAS", "RAS", "SRA"]


def test_manifest_row_errors_name_the_line(tmp_path: Path) -> None:
    """Manifest problems name the manifest, the column, the subject and the CSV line (header = line 1)."""
    from ae_batch.errors import DataError

    _save(tmp_path / "a.nii.gz", _tiny(0))
    manifest = tmp_path / "m.csv"

    def refused(rows: list[dict[str, str]], text: str | None = None) -> str:
        if text is None:
            pd.DataFrame(rows).to_csv(manifest, index=False)
        else:
            manifest.write_text(text)
        with pytest.raises(DataError) as err:
            discover_mri_subjects(manifest, dataset="scan")
        message = str(err.value)
        assert message.startswith(f"{manifest}: "), message
        return message

    row = {"subject_id": "s1", "image": "a.nii.gz", "channel": ""}
    message = refused([row, {**row, "subject_id": "s2"}, {**row, "subject_id": "s1"}])
    assert "column 'subject_id' of the manifest file: subject id s1 appears twice (lines 2 and 4)" in message
    message = refused([row, {**row, "subject_id": " "}])
    assert "column 'subject_id' has no subject id on line 3" in message
    message = refused([row, {**row, "subject_id": "s2", "channel": "-1"}])
    assert "column 'channel': subject s2 (line 3) has '-1'; expected a volume index >= 0" in message
    message = refused([row, {**row, "subject_id": "s2", "image": " "}])
    assert "column 'image' is empty for subject s2 (line 3)" in message
    message = refused([], text="subject_id,image,image\ns1,a.nii.gz,a.nii.gz\n")
    assert "column 'image' more than once in its header (columns 2 and 3)" in message
    message = refused([], text="subject id,image\ns1,a.nii.gz\n")
    assert "lacks column 'subject_id' (datasets.scan.id_column; did you mean 'subject id'?)" in message
