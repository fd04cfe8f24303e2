"""Stage ``synthesize``: write a synthetic cohort under ``data_synthetic/`` (documented ground truth)."""

from __future__ import annotations

import sys
from pathlib import Path


def synthesize(kind: str, out_dir: str | Path, n_subjects: int, seed: int, **kwargs: object) -> None:
    if kind == "ehr":
        from ae_batch.data.synthetic_ehr import synthesize_ehr_cohort

        synthesize_ehr_cohort(out_dir, n_subjects=n_subjects, seed=seed, **kwargs)  # type: ignore[arg-type]
    elif kind == "mri":
        from ae_batch.data.synthetic_mri import synthesize_mri_cohort

        shape = tuple(kwargs.pop("shape", (48, 56, 40)))  # type: ignore[arg-type]
        synthesize_mri_cohort(Path(out_dir), n_subjects=n_subjects, shape=shape, seed=seed)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown synthetic cohort kind {kind!r}; expected 'ehr' or 'mri'")
    print(f"synthesized {kind} cohort of {n_subjects} subjects in {out_dir}", file=sys.stderr)
