"""Find the subjects of an MRI data set: BraTS 2021, BraTS 2023, MSD Task01 or a manifest CSV.

Discovery reads names only (no image is opened; only dataset.json and CSV files are read): it returns one
:class:`MriSubject` per subject with the image to load, the segmentation if there is one, and the 4D
volume index for MSD images. Hidden files and macOS ``._*`` resource forks (common in the MSD tarball) are
skipped. :func:`subjects_sex` joins a subjects CSV (id + sex) onto the discovered subjects.

Modality names are the BraTS 2021 ones, ``t1``, ``t1ce``, ``t2``, ``flair``; the BraTS 2023 and MSD
spellings are accepted as aliases (``t1n``/``t1w``, ``t1c``/``t1gd``, ``t2w``, ``t2f``). For MSD a volume
index (``"0"``..``"3"``) also works.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ae_batch.data.tables import (
    csv_header,
    delimiter_of,
    duplicate_ids_error,
    locations,
    refuse_duplicate_columns,
    require_columns,
    row_location,
)
from ae_batch.errors import ConfigError, DataError

LAYOUTS = ("auto", "brats2021", "brats2023", "msd", "manifest")
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w", "t1-native"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1-gd", "t1post", "t1-ce"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "t2-flair"),
}
# File-name spelling of each canonical modality per BraTS release.
_BRATS_NAMES = {
    "brats2021": {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"},
    "brats2023": {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"},
}
# Task01_BrainTumour's dataset.json "modality" entry, used when dataset.json is absent.
MSD_DEFAULT_MODALITIES = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
_BRATS2021_DIR = re.compile(r"^BraTS2021_\d+$")
_BRATS2023_DIR = re.compile(r"^BraTS-[A-Za-z]+-\d+-\d+$")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class MriSubject:
    """One subject to load: ``channel`` picks a volume of a 4D image (MSD); ``sex`` comes from a manifest.

    ``line`` is where a manifest row sits (``"line 4"``), for error messages; it takes no part in ``==``.
    """

    subject_id: str
    image: Path
    seg: Path | None = None
    channel: int | None = None
    sex: str | None = None
    line: str | None = field(default=None, compare=False)


def config_key(dataset: str | None, key: str) -> str:
    """``datasets.<name>.<key>`` when the dataset is known, else the bare entry key."""
    return f"datasets.{dataset}.{key}" if dataset else key


def canonical_modality(modality: str) -> str:
    """Map any accepted spelling to t1 / t1ce / t2 / flair (case-insensitive)."""
    key = str(modality).strip().lower()
    for canonical, aliases in MODALITY_ALIASES.items():
        if key in aliases:
            return canonical
    known = ", ".join(f"{c} ({'/'.join(a[1:])})" for c, a in MODALITY_ALIASES.items())
    raise ConfigError(f"modality: unknown MRI modality {modality!r}; use one of {known}")


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")  # also covers macOS "._name" resource forks


def _is_nifti(p: Path) -> bool:
    return p.name.endswith(_NIFTI_SUFFIXES)


def detect_layout(path: Path) -> str:
    """Guess the layout of ``path``; raise DataError saying what was looked for when nothing fits."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: MRI data path does not exist")
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            return "manifest"
        raise DataError(f"{path}: a file path must be a manifest CSV (columns subject_id, image[, seg, sex])")
    names = [p.name for p in path.iterdir() if _visible(p)]
    if "dataset.json" in names or "imagesTr" in names:
        return "msd"
    n21 = sum(bool(_BRATS2021_DIR.match(n)) for n in names)
    n23 = sum(bool(_BRATS2023_DIR.match(n)) for n in names)
    if n21 and n23:
        raise DataError(f"{path}: holds both BraTS2021_* ({n21}) and BraTS-*-* ({n23}) folders; set layout")
    if n21:
        return "brats2021"
    if n23:
        return "brats2023"
    raise DataError(
        f"{path}: cannot detect the MRI layout: expected BraTS2021_* folders (brats2021), BraTS-GLI-* folders "
        f"(brats2023), dataset.json + imagesTr/ (msd), or a manifest CSV file; found {sorted(names)[:8]}"
    )


def resolve_layout(path: Path, layout: str = "auto") -> tuple[str, Path]:
    """Resolve ``auto`` and step into a single wrapper folder (e.g. an unzipped release) if needed."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout: unknown MRI layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if not path.exists():
        raise DataError(f"{path}: MRI data path does not exist")
    try:
        detected = detect_layout(path)
    except DataError:
        subdirs = [p for p in path.iterdir() if p.is_dir() and _visible(p)] if path.is_dir() else []
        if len(subdirs) != 1:
            if layout == "auto":
                raise
            return layout, path
        try:
            detected = detect_layout(subdirs[0])
        except DataError:
            if layout == "auto":
                raise
            return layout, path
        path = subdirs[0]
    return (detected if layout == "auto" else layout), path


def discover_mri_subjects(
    path: Path,
    layout: str = "auto",
    modality: str = "t1",
    *,
    id_column: str = "subject_id",
    sex_column: str = "sex",
    dataset: str | None = None,
) -> list[MriSubject]:
    """List the subjects under ``path`` (sorted by id). A missing image file is a DataError.

    ``id_column``/``sex_column`` name the manifest's columns (image, seg and channel are fixed names);
    ``dataset`` (the config's dataset name) lets messages name the config key of a missing column.
    """
    layout, root = resolve_layout(Path(path), layout)
    if layout in _BRATS_NAMES:
        subjects = _discover_brats(root, layout, modality)
    elif layout == "msd":
        subjects = _discover_msd(root, modality)
    else:
        subjects = _discover_manifest(root, id_column, sex_column, modality, dataset)
    if not subjects:
        raise DataError(f"{root}: no {layout} subjects found")
    return sorted(subjects, key=lambda s: s.subject_id)


def _nifti(folder: Path, stem: str) -> Path | None:
    for suffix in _NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _missing(problems: list[tuple[str, Path, str]], what: str) -> DataError:
    lines = [f"  {sid}: expected {p} ({found})" for sid, p, found in problems[:10]]
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    return DataError(f"{len(problems)} subject(s) lack the {what} file:\n" + "\n".join(lines) + more)


def _discover_brats(root: Path, layout: str, modality: str) -> list[MriSubject]:
    name = _BRATS_NAMES[layout][canonical_modality(modality)]
    pattern = _BRATS2021_DIR if layout == "brats2021" else _BRATS2023_DIR
    sep = "_" if layout == "brats2021" else "-"
    subjects, missing = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and pattern.match(p.name)):
        sid = folder.name
        image = _nifti(folder, f"{sid}{sep}{name}")
        if image is None:
            present = sorted(p.name for p in folder.iterdir() if _visible(p) and _is_nifti(p))
            missing.append((sid, folder / f"{sid}{sep}{name}.nii.gz", f"found {present}"))
            continue
        subjects.append(MriSubject(sid, image, _nifti(folder, f"{sid}{sep}seg")))
    if missing:
        raise _missing(missing, f"{modality} ({layout} name '{name}')")
    return subjects


def msd_channel(root: Path, modality: str) -> tuple[int, dict[str, str]]:
    """Volume index of ``modality`` in the MSD 4D images, from dataset.json's "modality" entry."""
    spec = root / "dataset.json"
    names = dict(MSD_DEFAULT_MODALITIES)
    if spec.is_file():
        try:
            names = {str(k): str(v) for k, v in json.loads(spec.read_text())["modality"].items()}
        except (ValueError, KeyError, AttributeError) as exc:
            raise DataError(f"{spec}: cannot read the 'modality' entry ({exc})") from exc
    key = str(modality).strip()
    if key.isdigit():
        if key not in names:
            raise DataError(f"{spec}: modality index {key} not among {names}")
        return int(key), names
    wanted = canonical_modality(key)
    for index, name in names.items():
        try:
            if canonical_modality(name) == wanted:
                return int(index), names
        except ConfigError:
            continue
    raise DataError(f"{spec}: no volume matches modality {modality!r}; set modality to one of {names}")


def _discover_msd(root: Path, modality: str) -> list[MriSubject]:
    channel, _ = msd_channel(root, modality)
    spec = root / "dataset.json"
    pairs: list[tuple[Path, Path | None]] = []
    if spec.is_file():
        try:
            training = json.loads(spec.read_text()).get("training", [])
        except ValueError as exc:
            raise DataError(f"{spec}: not valid JSON ({exc})") from exc
        for entry in training:
            image = root / str(entry["image"])
            label = entry.get("label")
            pairs.append((image, root / str(label) if label else None))
    if not pairs:
        images_dir = root / "imagesTr"
        if not images_dir.is_dir():
            raise DataError(f"{root}: MSD layout needs imagesTr/ (and dataset.json)")
        for image in sorted(p for p in images_dir.iterdir() if _visible(p) and _is_nifti(p)):
            pairs.append((image, root / "labelsTr" / image.name))
    subjects, missing = [], []
    for image, label in pairs:
        sid = image.name.removesuffix(".gz").removesuffix(".nii")
        if not image.is_file():
            missing.append((sid, image, "listed in dataset.json"))
            continue
        seg = label if label is not None and label.is_file() else None
        subjects.append(MriSubject(sid, image, seg, channel))
    if missing:
        raise _missing(missing, "4D image")
    return subjects


def _discover_manifest(
    csv_path: Path, id_column: str, sex_column: str, modality: str, dataset: str | None = None
) -> list[MriSubject]:
    """Rows of a manifest; a numeric ``modality`` is the default volume index for rows without ``channel``."""
    default_channel = int(modality) if str(modality).strip().isdigit() else None
    refuse_duplicate_columns(csv_header(csv_path), "manifest", csv_path)
    try:
        table = pd.read_csv(csv_path, sep=delimiter_of(csv_path), dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{csv_path}: cannot read manifest ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    require_columns(
        table, [id_column, "image"], "manifest", csv_path, {id_column: config_key(dataset, "id_column")}
    )
    ids = table[id_column].str.strip()
    empty = (ids == "").to_numpy().nonzero()[0]
    if len(empty):
        raise DataError(
            f"{csv_path}: column '{id_column}' has no subject id on {locations(csv_path, empty)}; "
            "every manifest row needs one"
        )
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise duplicate_ids_error(ids.tolist(), duplicated, id_column, "manifest", csv_path)
    base = csv_path.parent
    subjects, missing = [], []
    for i, (row, sid) in enumerate(zip(table.to_dict("records"), ids, strict=True)):
        if not row["image"].strip():
            raise DataError(
                f"{csv_path}: column 'image' is empty for subject {sid} ({row_location(csv_path, i)})"
            )
        image = _resolve(base, row["image"])
        if not image.is_file():
            missing.append((sid, image, f"from {csv_path}, {row_location(csv_path, i)}"))
            continue
        seg_text = str(row.get("seg", "")).strip()
        seg = _resolve(base, seg_text) if seg_text else None
        if seg is not None and not seg.is_file():
            raise DataError(
                f"{csv_path}: column 'seg': subject {sid} ({row_location(csv_path, i)}): segmentation "
                f"{seg} does not exist"
            )
        channel = _channel(str(row.get("channel", "")).strip(), sid, csv_path, i)
        sex_text = str(row.get(sex_column, "")).strip()
        subjects.append(
            MriSubject(
                sid,
                image,
                seg,
                default_channel if channel is None else channel,
                sex_text or None,
                row_location(csv_path, i) if sex_text else None,
            )
        )
    if missing:
        raise _missing(missing, "image")
    return subjects


def _channel(text: str, sid: str, csv_path: Path, index: int) -> int | None:
    """A manifest's volume index; "1.0" (pandas writes ints next to blanks as floats) means 1."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or not value.is_integer():
        raise DataError(
            f"{csv_path}: column 'channel': subject {sid} ({row_location(csv_path, index)}) has {text!r}; "
            "expected a volume index >= 0"
        )
    return int(value)


def subjects_sex(
    subjects: list[MriSubject],
    csv_path: Path,
    images: Path,
    id_column: str,
    sex_column: str,
    dataset: str | None = None,
) -> tuple[pd.Series, list[str]]:
    """Raw sex values from the subjects CSV, aligned to ``subjects``; every id must match both ways.

    Returns the values and, per subject, where its row sits in the CSV (``"line 4"``).
    """
    refuse_duplicate_columns(csv_header(csv_path), "subjects", csv_path)
    try:
        table = pd.read_csv(csv_path, sep=delimiter_of(csv_path), dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: subjects file is empty") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{csv_path}: cannot read the subjects CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    require_columns(
        table,
        [id_column, sex_column],
        "subjects",
        csv_path,
        {id_column: config_key(dataset, "id_column"), sex_column: config_key(dataset, "sex_column")},
    )
    ids = table[id_column].str.strip()
    empty = (ids.isna() | (ids == "")).to_numpy().nonzero()[0]
    if len(empty):
        raise DataError(
            f"{csv_path}: column '{id_column}' has no subject id on {locations(csv_path, empty)} "
            f"({len(empty)} row(s) in all); every row needs one"
        )
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise duplicate_ids_error(ids.tolist(), duplicated, id_column, "subjects", csv_path)
    position = {sid: i for i, sid in enumerate(ids)}
    by_id = {s.subject_id: s for s in subjects}
    no_row = sorted(set(by_id) - set(position))
    no_image = [sid for sid in ids if sid not in by_id]  # file order: the first is the first line
    if no_row or no_image:
        parts = []
        if no_image:
            first = no_image[0]
            parts.append(
                f"{len(no_image)} subject(s) in column '{id_column}' have no image under {images}: "
                f"{sorted(no_image)[:5]} (first: subject {first}, {row_location(csv_path, position[first])})"
            )
        if no_row:
            parts.append(
                f"{len(no_row)} subject(s) with images under {images} have no row: {no_row[:5]} "
                f"(first: subject {no_row[0]}, image {by_id[no_row[0]].image})"
            )
        raise DataError(f"{csv_path}: the subjects CSV and the images disagree: " + "; ".join(parts))
    rows = [position[s.subject_id] for s in subjects]
    values = table[sex_column].to_numpy(dtype=object)[rows]
    return pd.Series(values, name="sex"), [row_location(csv_path, i) for i in rows]


def _resolve(base: Path, text: str) -> Path:
    p = Path(text.strip()).expanduser()
    return p if p.is_absolute() else base / p
