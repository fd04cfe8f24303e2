"""Everything about an MRI cohort that can be checked without reading a voxel (fast, before any job).

1. discover the subjects (:mod:`ae_batch.data.mri_layouts`) and join the subjects CSV, if given;
2. check every subject's headers: readable, 3D (or 4D with a chosen volume), finite and non-singular
   affine, segmentation with the image's shape and affine, and a file as long as its header promises
   (a truncated download; for ``.nii.gz`` the gzip trailer's length is compared, and only a file whose
   trailer disagrees is decompressed to confirm).

Problems are collected over all subjects and raised together as one DataError whose lines each name the
file, the subject and what was expected. :func:`check_mri_inputs` is what ``ae_batch.data.checks`` runs
before any job; ``ae_batch.data.mri`` then reads the voxels.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ae_batch.data.mri_layouts import (
    MODALITY_ALIASES,
    MriSubject,
    config_key,
    discover_mri_subjects,
    resolve_layout,
    subjects_sex,
)
from ae_batch.errors import DataError

PERCENTILES = (0.5, 99.5)
_MAX_LISTED = 10


@dataclass
class MriHeader:
    """What the header check learned about one image (shape without a size-1 trailing axis)."""

    shape: tuple[int, ...]
    affine: np.ndarray
    orientation: str
    spacing: tuple[float, ...]


@dataclass
class MriInputs:
    """Everything known about a cohort before any voxel is read (:func:`check_mri_inputs`).

    ``sex`` holds the raw values aligned to ``subjects`` (None when no source gives sex); ``sex_file`` is
    the file they came from (subjects CSV or manifest) and ``sex_where[i]`` where subject i's row sits in
    it (``"line 4"``), for error messages.
    """

    root: Path
    layout: str
    subjects: list[MriSubject]
    headers: list[MriHeader]
    sex: pd.Series | None
    sex_file: Path | None
    sex_where: list[str | None]
    sex_column: str
    spatial_size: tuple[int, int, int]

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.subjects]


def _summarise(problems: list[str]) -> DataError:
    if len(problems) == 1:
        return DataError(problems[0])
    lines = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return DataError(f"{len(problems)} MRI input problems:\n{lines}{more}")


def _cause(exc: BaseException) -> str:
    """The innermost exception's message (MONAI wraps reader errors in RuntimeErrors)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def _four_d_hint(layout: str, volumes: int) -> str:
    if layout == "manifest":
        return f"add a 'channel' column (0..{volumes - 1}) to the manifest, or set modality to a volume index"
    if layout == "msd":
        return "set modality to one of the dataset.json modality names or indices"
    names = ", ".join(MODALITY_ALIASES)
    return (
        f"{layout} keeps one 3D file per modality: set modality to one of {names}, or use layout msd/manifest"
    )


def _squeeze_trailing(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_mri_headers(subjects: list[MriSubject], layout: str) -> list[MriHeader]:
    """Check every subject's image and segmentation headers; raise one DataError listing all problems.

    ``layout`` (the resolved one) only shapes the advice given for a 4D image.

    Reads headers only (cheap), so a broken subject at the end of a large cohort is found in seconds.
    """
    problems: list[str] = []
    headers: list[MriHeader] = []
    for s in subjects:
        where = f"{s.image}: subject {s.subject_id}"
        try:
            img = nib.load(s.image)
        except Exception as exc:
            problems.append(
                f"{where}: cannot read the NIfTI header ({_cause(exc)}); expected a .nii/.nii.gz file"
            )
            continue
        shape = _squeeze_trailing(tuple(int(n) for n in img.shape))
        if len(shape) == 4 and s.channel is None:
            problems.append(
                f"{where}: 4D image with {shape[3]} volumes where one 3D volume was expected: "
                + _four_d_hint(layout, shape[3])
            )
        elif len(shape) == 4 and s.channel >= shape[3]:
            problems.append(
                f"{where}: volume index {s.channel} requested but the 4D image has {shape[3]} volumes"
            )
        elif len(shape) == 3 and s.channel not in (None, 0):
            problems.append(f"{where}: volume index {s.channel} requested but the image is 3D {shape}")
        elif len(shape) not in (3, 4):
            problems.append(
                f"{where}: image of shape {shape}; expected a 3D volume (or 4D with a volume index)"
            )
        affine = np.asarray(img.affine, dtype=np.float64)
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
            problems.append(
                f"{where}: singular or non-finite affine (voxel-to-world matrix {affine[:3, :3].tolist()}); "
                "expected an invertible qform/sform so orientation and spacing are defined"
            )
            continue
        codes = nib.aff2axcodes(affine)
        if None in codes:
            problems.append(
                f"{where}: the affine maps two voxel axes onto one world axis (orientation {codes}); "
                "expected a voxel-to-world matrix with one voxel axis per world axis"
            )
            continue
        truncated = _truncation(s.image, img)
        if truncated:
            problems.append(f"{where}: {truncated}")
            continue
        headers.append(
            MriHeader(
                shape=shape,
                affine=affine,
                orientation="".join(codes),
                spacing=tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))),
            )
        )
        if s.seg is not None:
            problems.extend(_check_seg_header(s, shape[:3], affine))
    if problems:
        raise _summarise(problems)
    return headers


def _check_seg_header(s: MriSubject, spatial: tuple[int, ...], affine: np.ndarray) -> list[str]:
    where = f"{s.seg}: subject {s.subject_id}'s segmentation"
    try:
        seg = nib.load(s.seg)
    except Exception as exc:
        return [f"{where}: cannot read the NIfTI header ({_cause(exc)})"]
    seg_shape = _squeeze_trailing(tuple(int(n) for n in seg.shape))
    if seg_shape != spatial:
        return [
            f"{where}: shape {seg_shape} differs from the image {s.image} shape {spatial}; expected the same grid"
        ]
    if not np.allclose(seg.affine, affine, atol=1e-3):
        return [f"{where}: affine differs from the image {s.image} affine; expected co-registered files"]
    truncated = _truncation(s.seg, seg)
    return [f"{where}: {truncated}"] if truncated else []


def _expected_bytes(img: Any) -> int | None:
    """Header + voxel bytes a complete single-file NIfTI holds (None when the header cannot say)."""
    try:
        header = img.header
        offset = getattr(img.dataobj, "offset", None)  # the loaded header's vox_offset reads 0
        offset = int(header.get_data_offset() if offset is None else offset)
        n_voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
        return offset + n_voxels * int(header.get_data_dtype().itemsize)
    except Exception:
        return None


def _truncation(path: Path, img: Any) -> str | None:
    """Why ``path`` is shorter than its header promises (a truncated copy), or None if it is complete.

    Cheap: an uncompressed file's size is compared with header + voxel bytes; for ``.nii.gz`` the gzip
    trailer's length field (uncompressed size mod 2**32) is. A trailer that disagrees (truncation, or a
    multi-member gzip whose last member holds only part of the data) is confirmed by decompressing that
    one file.
    """
    expected = _expected_bytes(img)
    name = Path(path).name.lower()
    if expected is None or not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        size = Path(path).stat().st_size
        if name.endswith(".nii"):
            if size < expected:
                return (
                    f"file is truncated: {size} bytes where the header promises {expected} "
                    "(header and voxels); re-download or re-export it"
                )
            return None
        with open(path, "rb") as fh:
            if size >= 18:
                fh.seek(-4, 2)
                if int.from_bytes(fh.read(4), "little") == expected % 2**32:
                    return None
        return _gzip_truncation(Path(path), expected)
    except OSError as exc:
        return f"cannot read the file ({exc})"


def _gzip_truncation(path: Path, expected: int) -> str | None:
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        return (
            f"the file is truncated or corrupt: decompressing it fails before the {expected} bytes (header "
            f"and voxels) its header promises ({type(exc).__name__}: {exc}); re-download or re-export it"
        )
    if total < expected:
        return (
            f"file is truncated: {total} uncompressed bytes where the header promises {expected}; "
            "re-download or re-export it"
        )
    return None


def check_mri_inputs(
    path: Path,
    layout: str = "auto",
    modality: str = "t1",
    subjects_csv: Path | None = None,
    spatial_size: tuple[int, int, int] = (32, 32, 32),
    id_column: str = "subject_id",
    sex_column: str = "sex",
    *,
    dataset: str | None = None,
) -> MriInputs:
    """Steps 1-2 of the module docstring: discovery, subjects-CSV join and header checks; no voxel read.

    ``dataset`` (the config's dataset name) only makes messages name config keys in full.
    """
    spatial_size = tuple(int(n) for n in spatial_size)
    if len(spatial_size) != 3 or min(spatial_size) < 1:
        raise DataError(
            f"{config_key(dataset, 'spatial_size')}: must be three positive sizes, got {spatial_size}"
        )
    resolved, root = resolve_layout(Path(path), layout)
    subjects = discover_mri_subjects(
        root, resolved, modality, id_column=id_column, sex_column=sex_column, dataset=dataset
    )
    sex: pd.Series | None
    if subjects_csv is not None:
        sex, where = subjects_sex(subjects, Path(subjects_csv), root, id_column, sex_column, dataset)
        sex_file: Path | None = Path(subjects_csv)
        sex_where: list[str | None] = list(where)
    elif any(s.sex is not None for s in subjects):
        sex = pd.Series([s.sex for s in subjects], dtype=object, name="sex")
        sex_file, sex_where = root, [s.line for s in subjects]
    else:
        sex, sex_file, sex_where = None, None, [None] * len(subjects)
    headers = check_mri_headers(subjects, resolved)
    return MriInputs(
        root=root,
        layout=resolved,
        subjects=subjects,
        headers=headers,
        sex=sex,
        sex_file=sex_file,
        sex_where=sex_where,
        sex_column=sex_column,
        spatial_size=spatial_size,  # type: ignore[arg-type]
    )
