"""Load an MRI cohort into one ``[N, 1, X, Y, Z]`` float32 array in [0, 1], with sex and laterality.

Order of work, so that every bad input is reported before any training:

1. discover the subjects (:mod:`ae_batch.data.mri_layouts`) and join the subjects CSV, if given;
2. check every subject's headers: readable, 3D (or 4D with a chosen volume), finite and non-singular
   affine, segmentation with the image's shape and affine, and a file as long as its header promises
   (a truncated download; for ``.nii.gz`` the gzip trailer's length is compared, and only a file whose
   trailer disagrees is decompressed to confirm).
   Steps 1-2 are :func:`check_mri_inputs`, which never reads voxels: ``ae_batch.data.checks`` runs it
   before any job;
3. per subject: read the voxels (damage that keeps the file's length, e.g. a garbled gzip stream, fails
   here, named), refuse NaN/Inf voxels, compute laterality from the segmentation in world coordinates
   (:mod:`ae_batch.data.laterality`), then preprocess with MONAI: LoadImaged -> EnsureChannelFirstd ->
   (volume pick for 4D) -> Orientationd(RAS) -> Spacingd(1 mm) -> ScaleIntensityRangePercentilesd(0.5,
   99.5 -> [0, 1], clip) -> CropForegroundd (> 0) -> aspect-preserving Resize + symmetric zero pad to
   ``spatial_size``.

Problems are collected over all subjects and raised together as one DataError whose lines each name the
subject, the file and what was expected. Every step is per volume: nothing is fitted across subjects, so
there is nothing to leak between splits.

NaN/Inf policy: an error, naming the subject, file and number of bad voxels. Percentile scaling turns one
NaN into a whole NaN volume, and silently imputing would hide a broken conversion upstream.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ae_batch.data.laterality import LATERALITY_DEFINITION, laterality_score
from ae_batch.data.mri_headers import (
    PERCENTILES,
    MriHeader,
    MriInputs,
    _cause,
    _summarise,
    check_mri_headers,
    check_mri_inputs,
)
from ae_batch.data.mri_layouts import MriSubject, canonical_modality, discover_mri_subjects, msd_channel
from ae_batch.errors import DataError

__all__ = [
    "MriCohort",
    "MriHeader",
    "MriInputs",
    "MriSubject",
    "check_mri_headers",
    "check_mri_inputs",
    "discover_mri_subjects",
    "load_mri_cohort",
    "load_mri_volumes",
]


@dataclass
class MriCohort:
    """Preprocessed volumes and labels, one entry per subject in ``subject_ids`` order.

    ``sex`` holds the raw values (positional RangeIndex, name "sex"), or None when no source gave sex;
    ``laterality`` is NaN where a subject has no segmentation or an empty one; ``inputs`` is what the
    checks before loading found (where each sex value came from, for messages).
    """

    subject_ids: list[str]
    volumes: np.ndarray
    sex: pd.Series | None
    laterality: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: MriInputs | None = None


def load_mri_cohort(
    path: Path,
    layout: str = "auto",
    modality: str = "t1",
    subjects_csv: Path | None = None,
    spatial_size: tuple[int, int, int] = (32, 32, 32),
    id_column: str = "subject_id",
    sex_column: str = "sex",
    *,
    progress: bool = True,
    dataset: str | None = None,
) -> MriCohort:
    """Discover, validate and preprocess an MRI cohort (see the module docstring for each step)."""
    inputs = check_mri_inputs(
        path, layout, modality, subjects_csv, spatial_size, id_column, sex_column, dataset=dataset
    )
    return load_mri_volumes(inputs, modality, subjects_csv, progress=progress)


def load_mri_volumes(
    inputs: MriInputs, modality: str, subjects_csv: Path | None = None, *, progress: bool = True
) -> MriCohort:
    """Step 3 of the module docstring for inputs :func:`check_mri_inputs` has checked."""
    spatial_size = inputs.spatial_size
    resolved, root, subjects, headers, sex = (
        inputs.layout,
        inputs.root,
        inputs.subjects,
        inputs.headers,
        inputs.sex,
    )

    volumes = np.zeros((len(subjects), 1, *spatial_size), dtype=np.float32)
    laterality = np.full(len(subjects), np.nan)
    problems: list[str] = []
    labels: Counter[int] = Counter()
    start = time.monotonic()
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged  # slow import: only when loading

    loader = Compose(
        [LoadImaged("image", reader="NibabelReader", image_only=True), EnsureChannelFirstd("image")]
    )
    preprocess = _preprocess(spatial_size)
    for i, s in enumerate(subjects):
        try:
            image = _read_image(loader, s)
            laterality[i], found = _subject_laterality(s, image)
            labels.update(found)
            if not problems:
                volumes[i] = _run(preprocess, image, s)
        except DataError as exc:
            problems.append(str(exc))
        if progress and ((i + 1) % 10 == 0 or i + 1 == len(subjects)):
            print(
                f"[mri] {i + 1}/{len(subjects)} subjects ({time.monotonic() - start:.1f} s)", file=sys.stderr
            )
    if problems:
        raise _summarise(problems)

    channels = sorted({s.channel for s in subjects if s.channel is not None})
    meta: dict[str, Any] = {
        "kind": "mri",
        "path": str(root),
        "layout": resolved,
        "modality": modality if resolved == "manifest" else _modality_name(root, resolved, modality),
        "channel": channels[0] if len(channels) == 1 else (channels or None),
        "spatial_size": list(spatial_size),
        "orientation": "RAS",
        "spacing_mm": [1.0, 1.0, 1.0],
        "intensity_scaling": {
            "transform": "ScaleIntensityRangePercentilesd",
            "percentiles": list(PERCENTILES),
            "range": [0.0, 1.0],
            "clip": True,
            "per_volume": True,
        },
        "crop": "CropForegroundd: bounding box of voxels > 0 after scaling, 1-voxel margin",
        "resize": "aspect-preserving Resize to fit spatial_size (area when shrinking, trilinear when "
        "enlarging), then symmetric zero padding",
        "fitted_across_subjects": False,
        "nan_policy": "error: NaN/Inf voxels in the selected image raise a DataError (nothing imputed)",
        "laterality": LATERALITY_DEFINITION,
        "laterality_grid": "native file grid (segmentation + image > 0), before any resampling",
        "seg_labels": sorted(labels),
        "n_subjects": len(subjects),
        "n_with_seg": sum(s.seg is not None for s in subjects),
        "original_orientation": [h.orientation for h in headers],
        "original_orientation_counts": dict(Counter(h.orientation for h in headers)),
        "original_spacing_mm": sorted({tuple(round(v, 4) for v in h.spacing) for h in headers}),
        "subjects_csv": str(subjects_csv) if subjects_csv is not None else None,
        "monai_version": _monai_version(),
    }
    return MriCohort([s.subject_id for s in subjects], volumes, sex, laterality, meta, inputs)


def _monai_version() -> str:
    import monai

    return str(monai.__version__)


def _modality_name(root: Path, layout: str, modality: str) -> str:
    if layout == "msd":
        channel, names = msd_channel(root, modality)
        return names[str(channel)]
    return canonical_modality(modality)


def _read_image(loader: Any, s: MriSubject) -> Any:
    """LoadImaged + EnsureChannelFirstd, then the chosen volume; voxel-level checks named by subject."""
    where = f"{s.image}: subject {s.subject_id}"
    try:
        image = loader({"image": str(s.image)})["image"]
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read the voxel data ({_cause(exc)}); the file is truncated or corrupt: "
            "re-download or re-export it"
        ) from exc
    if s.channel is not None:
        image = image[s.channel : s.channel + 1]
    data = image.numpy()
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise DataError(f"{where}: {n_bad} NaN/Inf voxel(s) of {data.size}; expected finite intensities")
    if float(data.max()) <= float(data.min()):
        raise DataError(f"{where}: every voxel equals {float(data.min())}; expected an image with contrast")
    return image


def _run(preprocess: Any, image: Any, s: MriSubject) -> np.ndarray:
    try:
        return preprocess(image)
    except Exception as exc:  # MONAI errors name neither the subject nor the file
        raise DataError(f"{s.image}: subject {s.subject_id}: preprocessing failed ({_cause(exc)})") from exc


def _subject_laterality(s: MriSubject, image: Any) -> tuple[float, list[int]]:
    """Laterality on the native grid: seg > 0 against the image > 0 brain mask, sides from the affine."""
    if s.seg is None:
        return float("nan"), []
    where = f"{s.seg}: subject {s.subject_id}'s segmentation"
    try:
        seg = np.asanyarray(nib.load(s.seg).dataobj)
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read the voxel data ({_cause(exc)}); the file is truncated or corrupt"
        ) from exc
    seg = seg.reshape(seg.shape[:3])
    if not np.all(np.isfinite(seg)) or np.any(seg < 0) or np.any(seg != np.round(seg)):
        raise DataError(f"{where}: expected non-negative integer labels")
    seg = seg.astype(np.int64)
    found = np.flatnonzero(np.bincount(seg.ravel())).tolist()
    brain = image[0].numpy() > 0
    affine = np.asarray(image.affine, dtype=np.float64)
    score = laterality_score(seg, affine, brain if brain.any() else None)
    return score, found


def _preprocess(spatial_size: tuple[int, int, int]) -> Any:
    from monai.transforms import (
        Compose,
        CropForegroundd,
        Orientationd,
        Resize,
        ScaleIntensityRangePercentilesd,
        Spacingd,
        SpatialPad,
    )

    chain = Compose(
        [
            # Explicit RAS labels: NibabelReader affines are RAS (this also silences a MONAI FutureWarning).
            Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
            ScaleIntensityRangePercentilesd(
                "image", lower=PERCENTILES[0], upper=PERCENTILES[1], b_min=0.0, b_max=1.0, clip=True
            ),
            CropForegroundd("image", source_key="image", margin=1, allow_smaller=True),
        ]
    )
    target = np.asarray(spatial_size, dtype=np.float64)
    pad = SpatialPad(spatial_size, method="symmetric", mode="constant")

    def run(image: Any) -> np.ndarray:
        out = chain({"image": image})["image"]
        shape = np.asarray(out.shape[1:], dtype=np.float64)
        scale = float(np.min(target / shape))
        size = tuple(int(n) for n in np.clip(np.round(shape * scale), 1, target))
        out = Resize(size, mode="area" if scale <= 1.0 else "trilinear")(out)
        out = pad(out)
        return np.clip(np.asarray(out.numpy(), dtype=np.float32), 0.0, 1.0)

    return run
