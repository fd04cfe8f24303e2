"""Synthetic brain-tumour MRI cohort in the BraTS 2021 layout, with documented ground truth.

Layout written by :func:`synthesize_mri_cohort` (the same as the BraTS 2021 training release)::

    out_dir/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz
    out_dir/subjects.csv

Each subject is a procedural, skull-stripped head phantom on a 1 mm grid (default 48 x 56 x 40 voxels,
x = left-right, y = posterior-anterior, z = inferior-superior):

- Brain: an ellipsoid (background is exactly 0, as in skull-stripped data). Female mean semi-axes are
  (0.39, 0.40, 0.41) x the grid size, i.e. (18.7, 22.4, 16.4) mm by default. Each subject's size varies by
  a common log-scale factor (sd 0.02) and per-axis factors (sd 0.02), both clipped at 2.5 sd; the brain
  centre is shifted by up to 4 % of the grid so the mid-sagittal plane is not the array centre.
- Tissue: a thin outer CSF rim (normalised radius > 0.94), a cortical grey-matter ribbon whose inner
  border is folded by a smooth random field, white matter inside, an interhemispheric CSF fissure in the
  superior half, and two lateral ventricles (CSF) either side of the midline.
- Sex (exactly half F, half M, independent of tumour side): male brains are 8 % larger in volume (every
  semi-axis x 1.08^(1/3)); across subjects the log brain volume has sd sqrt(9 * 0.02^2 + 3 * 0.02^2) =
  0.069, so the designed sex effect on log brain volume is Cohen's d = log(1.08) / 0.069 = 1.1 (similar to
  human data). Ventricles scale with the brain and are a further 20 % larger in males
  (log-volume effect 0.18 against a within-group sd of 0.15: d = 1.2 at fixed age, ~0.5 marginally).
- Age: uniform integer 25-80 years, independent of sex; ventricle volume grows 2 % per year (log scale).
- Tumour (one per subject): BraTS labels 1 = necrotic core (inner 55 % of the core radius), 4 = enhancing
  ring (rest of the core, radius 0.18-0.30 x the mean brain semi-axis), 2 = edema (an ellipsoid 0.12-0.35 x
  the mean semi-axis beyond the core, per-axis jitter 0.8-1.2). ``tumour_side`` is exactly balanced
  (left/right, shuffled). The centre lies 0.12-0.60 x the brain's x semi-axis from the midline on that
  side (``tumour_offset_mm``), so near-midline tumours spill into the other hemisphere and ``laterality``
  spans roughly 0.2 to 1 in magnitude instead of only +/-1.
- Contrasts (0-1000 scale, x a per-subject, per-modality gain 0.9-1.1): t1: WM 700 > GM 450 > CSF 150,
  tumour hypointense; t1ce: as t1 with the enhancing ring at 950; t2: CSF 950-980 brightest, edema 800,
  WM 300; flair: CSF dark (60-80), edema 900 brightest. Then a 0.6-voxel Gaussian blur (partial volume),
  a smooth multiplicative bias field (linear + quadratic terms, about +/-10 %), Gaussian noise sd 15, and
  int16 storage with every brain voxel >= 1.
- Orientation: the arrays are generated in RAS with a 1 mm affine centred on the grid; a third of the
  subjects (``round(n / 3)``, chosen at random) are stored LPS: the array is flipped along x and y and the
  affine changed to match, so the world coordinates of every voxel are unchanged.

``subjects.csv`` columns: ``subject_id``, ``sex`` (F/M), ``age``, ``tumour_side`` (left/right, the
designed side), ``laterality`` (ground truth recomputed from the written seg and t1 files with
:func:`ae_batch.data.laterality.laterality_score`: (V_left - V_right) / (V_left + V_right) of seg > 0 in
world RAS x, relative to the world x of the brain-mask centroid, so left tumours score > 0), plus
``orientation`` (RAS/LPS as stored), ``tumour_offset_mm``, ``brain_volume_ml``, ``ventricle_volume_ml``
and ``tumour_volume_ml``.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``seed`` (per subject by
``(seed, index)``) and the gzip streams carry no timestamp, so the same seed writes byte-identical files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ae_batch.data.laterality import laterality_score
from ae_batch.io import atomic_path, write_csv

MODALITIES = ("t1", "t1ce", "t2", "flair")
SEG_LABELS = {1: "necrotic core", 2: "edema", 4: "enhancing"}

# Tissue classes of the phantom (index into the contrast tables below).
_BG, _CSF, _GM, _WM, _VENT, _EDEMA, _ENH, _NEC = range(8)
_CLASS_TO_SEG = {_NEC: 1, _EDEMA: 2, _ENH: 4}
#                  bg  CSF   GM   WM  vent edema  enh  nec
_CONTRAST = {
    "t1": (0, 150, 450, 700, 120, 350, 480, 150),
    "t1ce": (0, 150, 450, 680, 120, 380, 950, 150),
    "t2": (0, 950, 550, 300, 980, 800, 600, 900),
    "flair": (0, 80, 520, 380, 60, 900, 700, 300),
}

BRAIN_FRACTION = (0.39, 0.40, 0.41)  # female mean semi-axes as a fraction of the grid size
MALE_BRAIN_VOLUME_RATIO = 1.08
MALE_VENTRICLE_VOLUME_RATIO = 1.20  # on top of the brain-size effect
BRAIN_GLOBAL_SD = 0.02
BRAIN_AXIS_SD = 0.02
VENTRICLE_LOG_SD = 0.15
VENTRICLE_AGE_SLOPE = 0.02  # log volume per year, centred at 55
AGE_RANGE = (25, 80)
NOISE_SD = 15.0


def synthesize_mri_cohort(
    out_dir: Path, n_subjects: int = 48, shape: tuple[int, int, int] = (48, 56, 40), seed: int = 0
) -> None:
    """Write a synthetic BraTS-2021-layout cohort and its ``subjects.csv`` into ``out_dir``."""
    if n_subjects < 2:
        raise ValueError(f"n_subjects must be at least 2, got {n_subjects}")
    if len(shape) != 3 or min(shape) < 12:
        raise ValueError(f"shape must be three sizes of at least 12 voxels, got {shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_male = n_subjects // 2
    sexes = rng.permutation(np.array(["M"] * n_male + ["F"] * (n_subjects - n_male)))
    n_left = n_subjects // 2
    sides = rng.permutation(np.array(["left"] * n_left + ["right"] * (n_subjects - n_left)))
    lps = set(rng.choice(n_subjects, size=round(n_subjects / 3), replace=False).tolist())
    ras_affine = np.eye(4)
    ras_affine[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1.0) / 2.0

    rows = []
    for i in range(n_subjects):
        sid = f"BraTS2021_{i:05d}"
        sub_rng = np.random.default_rng((seed, i))
        classes, info = _phantom(sub_rng, shape, male=sexes[i] == "M", side=str(sides[i]))
        seg = np.zeros(shape, dtype=np.uint8)
        for cls, label in _CLASS_TO_SEG.items():
            seg[classes == cls] = label
        images = {m: _render(sub_rng, classes, m) for m in MODALITIES}
        affine = ras_affine
        if i in lps:
            affine = ras_affine @ _flip_xy(shape)
            seg = seg[::-1, ::-1, :]
            images = {m: img[::-1, ::-1, :] for m, img in images.items()}
        folder = out_dir / sid
        folder.mkdir(exist_ok=True)
        for m, img in images.items():
            _save_nifti(img, affine, folder / f"{sid}_{m}.nii.gz")
        _save_nifti(seg, affine, folder / f"{sid}_seg.nii.gz")
        rows.append(
            {
                "subject_id": sid,
                "sex": str(sexes[i]),
                "age": info["age"],
                "tumour_side": str(sides[i]),
                "laterality": laterality_score(seg, affine, images["t1"] > 0),
                "orientation": "LPS" if i in lps else "RAS",
                "tumour_offset_mm": round(info["offset_mm"], 3),
                "brain_volume_ml": info["brain_voxels"] / 1000.0,
                "ventricle_volume_ml": info["ventricle_voxels"] / 1000.0,
                "tumour_volume_ml": int(np.count_nonzero(seg)) / 1000.0,
            }
        )
    write_csv(out_dir / "subjects.csv", pd.DataFrame(rows))


def _flip_xy(shape: tuple[int, int, int]) -> np.ndarray:
    """Index map new -> old for an array flipped along its first two axes (RAS grid stored as LPS)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = shape[0] - 1
    flip[1, 3] = shape[1] - 1
    return flip


def _ellipsoid_r2(grids: tuple[np.ndarray, ...], centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    x, y, z = grids
    return (
        ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + ((z - centre[2]) / semi[2]) ** 2
    )


def _phantom(
    rng: np.random.Generator, shape: tuple[int, int, int], male: bool, side: str
) -> tuple[np.ndarray, dict[str, float]]:
    """Tissue-class map for one subject (in RAS voxel order) and its ground-truth numbers."""
    size = np.asarray(shape, dtype=np.float64)
    grids = tuple(
        np.arange(n, dtype=np.float64).reshape([-1 if a == k else 1 for a in range(3)])
        for k, n in enumerate(shape)
    )
    age = int(rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1))
    global_scale = np.exp(
        np.clip(rng.normal(0.0, BRAIN_GLOBAL_SD), -2.5 * BRAIN_GLOBAL_SD, 2.5 * BRAIN_GLOBAL_SD)
    )
    axis_scale = np.exp(np.clip(rng.normal(0.0, BRAIN_AXIS_SD, 3), -2.5 * BRAIN_AXIS_SD, 2.5 * BRAIN_AXIS_SD))
    sex_scale = MALE_BRAIN_VOLUME_RATIO ** (1 / 3) if male else 1.0
    semi = size * np.asarray(BRAIN_FRACTION) * global_scale * axis_scale * sex_scale
    centre = (size - 1.0) / 2.0 + rng.uniform(-0.04, 0.04, 3) * size
    r = np.sqrt(_ellipsoid_r2(grids, centre, semi))
    brain = r <= 1.0

    classes = np.zeros(shape, dtype=np.uint8)
    folding = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    folding /= folding.std() + 1e-12
    classes[brain] = _WM
    classes[brain & (r > 0.80 + 0.06 * folding)] = _GM
    classes[brain & (r > 0.94)] = _CSF
    x, _, z = grids
    fissure = brain & (np.abs(x - centre[0]) < 0.6) & (z > centre[2]) & (r > 0.35)
    classes[fissure] = _CSF

    log_vent = np.log(MALE_VENTRICLE_VOLUME_RATIO) * male + VENTRICLE_AGE_SLOPE * (age - 55)
    vent_scale = np.exp((log_vent + rng.normal(0.0, VENTRICLE_LOG_SD)) / 3.0)
    vent_semi = semi * np.array([0.12, 0.36, 0.16]) * vent_scale
    ventricles = np.zeros(shape, dtype=bool)
    for sign in (-1.0, 1.0):
        v_centre = centre + np.array(
            [sign * (0.20 * semi[0] * vent_scale + 0.5), 0.05 * semi[1], 0.10 * semi[2]]
        )
        ventricles |= _ellipsoid_r2(grids, v_centre, vent_semi) <= 1.0
    ventricles &= brain
    classes[ventricles] = _VENT

    mean_semi = float(np.prod(semi) ** (1 / 3))
    core_r = rng.uniform(0.18, 0.30) * mean_semi
    edema_semi = (core_r + rng.uniform(0.12, 0.35) * mean_semi) * rng.uniform(0.8, 1.2, 3)
    core_semi = core_r * rng.uniform(0.85, 1.15, 3)
    direction = -1.0 if side == "left" else 1.0  # RAS: x grows to the subject's right
    while True:
        offset = rng.uniform(0.12, 0.60) * semi[0]
        t_centre = centre + np.array(
            [direction * offset, rng.uniform(-0.45, 0.45) * semi[1], rng.uniform(-0.35, 0.35) * semi[2]]
        )
        if np.sqrt(np.sum(((t_centre - centre) / semi) ** 2)) < 0.75:
            break
    core_r2 = _ellipsoid_r2(grids, t_centre, core_semi)
    classes[brain & (_ellipsoid_r2(grids, t_centre, edema_semi) <= 1.0)] = _EDEMA
    classes[brain & (core_r2 <= 1.0)] = _ENH
    classes[brain & (core_r2 <= 0.55**2)] = _NEC
    info = {
        "age": age,
        "offset_mm": float(offset),
        "brain_voxels": int(brain.sum()),
        "ventricle_voxels": int(ventricles.sum()),
    }
    return classes, info


def _render(rng: np.random.Generator, classes: np.ndarray, modality: str) -> np.ndarray:
    """One modality: contrast lookup, partial-volume blur, bias field, noise; int16, background 0."""
    lut = np.asarray(_CONTRAST[modality], dtype=np.float64) * rng.uniform(0.9, 1.1)
    img = ndimage.gaussian_filter(lut[classes], sigma=0.6)
    shape = classes.shape
    coords = [
        np.linspace(-1.0, 1.0, n).reshape([-1 if a == k else 1 for a in range(3)])
        for k, n in enumerate(shape)
    ]
    lin = rng.normal(0.0, 0.06, 3)
    quad = rng.normal(0.0, 0.04, 3)
    bias = np.exp(sum(lin[k] * coords[k] + quad[k] * coords[k] ** 2 for k in range(3)))
    img = img * bias + rng.normal(0.0, NOISE_SD, shape)
    brain = classes != _BG
    out = np.zeros(shape, dtype=np.int16)
    out[brain] = np.clip(np.rint(img[brain]), 1, 32767).astype(np.int16)
    return out


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Atomic, reproducible .nii.gz (gzip without a timestamp), qform and sform both set to ``affine``."""
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
