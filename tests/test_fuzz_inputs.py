"""Property-based bad input: every table either prepares correctly or raises *our* error naming the
column or subject, never a raw traceback from deep inside pandas / scikit-learn / numpy; every corrupted
NIfTI gives our error naming the file."""

from __future__ import annotations

import gzip
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ae_batch.config import SplitsConfig
from ae_batch.data.ehr import build_tabular_dataset
from ae_batch.errors import AeBatchError, DataError

SPLITS = SplitsConfig(val_fraction=0.2, test_fraction=0.2, seed=0)
NAMES = st.text(alphabet=string.ascii_letters + string.digits + " _-é", min_size=1, max_size=8)
CELL = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-1000, 1000),
    st.sampled_from(["", " ", "abc", "n/a", "1e3", "007", "7", "−1", "NaN", "inf"]),
)


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(2, 40))
    # Unique ids (zero-padded and bare spellings of one number are different subjects), and an
    # occasional duplicate.
    pool = ["7", "007", "07", " 8", "8x"] + [f"{i:03d}" for i in range(60)]
    ids = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n, unique=True))
    if draw(st.sampled_from([False] * 9 + [True])):
        ids[-1] = ids[0]
    sex_values = draw(
        st.sampled_from(
            [["F", "M"], ["1", "2"], ["female", "male"], ["F"], ["F", "M", "X"], ["F", "M", None]]
        )
    )
    sex = [draw(st.sampled_from(sex_values)) for _ in range(n)]
    columns = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    data = {"subject_id": ids, "sex": sex}
    for col in columns:
        if col in data:
            continue
        kind = draw(st.sampled_from(["numeric", "mixed", "text", "all_nan"]))
        if kind == "numeric":
            data[col] = draw(
                st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(np.nan)), min_size=n, max_size=n)
            )
        elif kind == "all_nan":
            data[col] = [np.nan] * n
        elif kind == "text":
            data[col] = draw(st.lists(st.sampled_from(["a", "b", None, ""]), min_size=n, max_size=n))
        else:
            data[col] = draw(st.lists(CELL, min_size=n, max_size=n))
    return pd.DataFrame(data)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables())
def test_any_table_prepares_or_raises_our_error(tmp_path: Path, table: pd.DataFrame) -> None:
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    entry = {"path": str(path), "id_column": "subject_id", "sex_column": "sex"}
    try:
        data = build_tabular_dataset(entry, SPLITS, "fuzz")
    except AeBatchError as exc:
        message = str(exc)
        event(f"refused: {message.split(':')[1][:40] if ':' in message else message[:40]}")
        assert str(path) in message or "subject" in message or "split" in message, message
        return
    event("prepared")
    # It worked: check it worked correctly.
    assert np.isfinite(data.features).all()
    assert len(data.features) == len(table)
    assert data.subjects["subject_id"].tolist() == table["subject_id"].astype(str).str.strip().tolist()
    assert set(data.subjects["sex"].unique()) == {0.0, 1.0}
    assert set(data.subjects["split"]) == {"train", "val", "test"}
    train = data.subjects["split"].to_numpy() == "train"
    for j, name in enumerate(data.meta["feature_names"]):
        if "=" not in name:  # standardised numeric column: zero mean on training subjects
            assert abs(float(data.features[train, j].mean())) < 1e-3


def _write_nifti(path: Path, seed: int) -> None:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    img = nib.Nifti1Image(rng.random((12, 12, 12)).astype(np.float32) * 100, np.diag([1.0, 1, 1, 1]))
    nib.save(img, path)


@pytest.fixture(scope="module")
def good_nifti(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("nii") / "img.nii.gz"
    _write_nifti(path, 0)
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.floats(0.0, 0.95),
    flips=st.lists(st.integers(0, 10_000), min_size=0, max_size=8),
    mode=st.sampled_from(["truncate", "flip", "raw_flip"]),
)
def test_corrupted_nifti_gives_our_error_naming_the_file(
    tmp_path: Path, good_nifti: bytes, cut: float, flips: list[int], mode: str
) -> None:
    """Truncations and byte flips of a real .nii.gz: our DataError naming the file, or a volume that loads."""
    from ae_batch.data.mri import load_mri_cohort

    data = bytearray(good_nifti)
    if mode == "truncate":
        data = data[: int(len(data) * cut)]
    elif mode == "flip":  # flips in the compressed stream
        for i in flips:
            data[i % len(data)] ^= 0xFF
    else:  # flips in the decompressed NIfTI (header and voxels), recompressed: a valid gzip of a bad file
        raw = bytearray(gzip.decompress(bytes(data)))
        for i in flips:
            raw[i % 352] ^= 0xFF  # the 348-byte header + extension flag
        data = bytearray(gzip.compress(bytes(raw), mtime=0))
    folder = tmp_path / "cohort"
    folder.mkdir(exist_ok=True)
    image = folder / "img.nii.gz"
    image.write_bytes(bytes(data))
    manifest = folder / "manifest.csv"
    pd.DataFrame({"subject_id": ["sub1"], "image": ["img.nii.gz"]}).to_csv(manifest, index=False)
    try:
        cohort = load_mri_cohort(manifest, layout="manifest", spatial_size=(8, 8, 8), progress=False)
    except DataError as exc:
        event(f"{mode}: refused")
        assert "img.nii.gz" in str(exc) and "sub1" in str(exc), str(exc)
        return
    event(f"{mode}: loaded")
    assert cohort.volumes.shape == (1, 1, 8, 8, 8)
    assert np.isfinite(cohort.volumes).all()
