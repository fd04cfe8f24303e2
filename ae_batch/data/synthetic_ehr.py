"""Synthetic EHR cohort with documented ground truth, in the shape of ICD-9 events + the PheCode map.

Files written to ``out_dir`` (deterministic from ``seed``):

- ``events.csv``: ``subject_id, code, age`` — one row per diagnosis event (ICD-9-like codes such as
  ``412.1``; about 2% of events carry codes absent from the map, as real extracts do).
- ``subjects.csv``: ``subject_id, sex, age`` — ids are zero-padded text (``00042``); sex is ``F``/``M``.
- ``code_map.csv``: ``ICD9, PheCode, sex`` — like PheWAS catalog map v1.2: each phenotype has 1–4 codes;
  ``sex`` is ``Female``/``Male`` for sex-restricted phenotypes and empty otherwise.
- ``tabular.csv``: a wide one-row-per-subject table (numeric labs with missing values, categorical
  smoking status and site) for ``kind: tabular``.

Ground truth (the generative model):

- ``K = 6`` latent comorbidity clusters. Subject *i* has a burden ``u_ik ~ N(0, 1)`` on each cluster;
  phenotype *j* belongs to cluster ``j mod K``.
- ``logit P(subject i has phenotype j) = b_j + w_j u_i,c(j) + a_j z_age(i) + s_j male_i`` with base rate
  ``b_j ~ U(-4, -1.5)``, cluster loading ``w_j ~ U(1, 2)``, age slope ``a_j ~ U(0, 1)`` per SD of age
  (age ~ U(18, 90)), and a **sex effect** ``s_j = ±SEX_EFFECT = ±0.6`` log-odds (sign random) on a
  random 30% of the phenotypes that are not sex-restricted (``s_j = 0`` on the rest).
- 6 female-only and 4 male-only phenotypes (``N_FEMALE_ONLY``, ``N_MALE_ONLY``): probability 0 for the
  other sex; the code map marks them, and they let a classifier "cheat" if they are kept.
- Each present phenotype yields 1 + Poisson(1.5) events on its codes, at ages before the current age.

What a model can learn: with the sex-restricted phenotypes dropped, a standardised logistic regression on
the binary subject × phenotype matrix (default cohort: 2,000 subjects, 300 phenotypes) reaches a
cross-validated sex AUROC of about 0.80 (tested: between 0.72 and 0.88); with the restricted phenotypes
kept it is higher. Cluster structure gives the matrix a low effective rank for the autoencoder to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ae_batch.io import write_csv

N_CLUSTERS = 6
SEX_EFFECT = 0.6
SEX_EFFECT_FRACTION = 0.3
N_FEMALE_ONLY = 6
N_MALE_ONLY = 4
UNMAPPED_EVENT_FRACTION = 0.02
FILES = ("events.csv", "subjects.csv", "code_map.csv", "tabular.csv")


def _phecode(j: int) -> str:
    return f"{8 + j * 3 // 2}.{j % 2 + 1}" if j < 600 else f"{900 + j}.1"


def synthesize_ehr_cohort(
    out_dir: str | Path, n_subjects: int = 2000, n_phenotypes: int = 300, seed: int = 7
) -> dict[str, object]:
    """Write the synthetic EHR cohort to ``out_dir`` and return its ground truth (per-phenotype params)."""
    if n_phenotypes < N_FEMALE_ONLY + N_MALE_ONLY + N_CLUSTERS:
        raise ValueError(f"n_phenotypes must be at least {N_FEMALE_ONLY + N_MALE_ONLY + N_CLUSTERS}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    n, p = n_subjects, n_phenotypes

    male = rng.random(n) < 0.5
    age = rng.uniform(18, 90, size=n).round(1)
    age_z = (age - 54.0) / 20.8
    burden = rng.standard_normal((n, N_CLUSTERS))

    cluster = np.arange(p) % N_CLUSTERS
    base = rng.uniform(-4.0, -1.5, size=p)
    loading = rng.uniform(1.0, 2.0, size=p)
    age_slope = rng.uniform(0.0, 1.0, size=p)
    restriction = np.array([""] * p, dtype=object)
    restricted = rng.choice(p, size=N_FEMALE_ONLY + N_MALE_ONLY, replace=False)
    restriction[restricted[:N_FEMALE_ONLY]] = "Female"
    restriction[restricted[N_FEMALE_ONLY:]] = "Male"
    free = np.flatnonzero(restriction == "")
    sex_effect = np.zeros(p)
    effected = rng.choice(free, size=round(SEX_EFFECT_FRACTION * len(free)), replace=False)
    sex_effect[effected] = SEX_EFFECT * rng.choice([-1.0, 1.0], size=len(effected))

    logit = base + loading * burden[:, cluster] + age_slope * age_z[:, None] + sex_effect * male[:, None]
    prob = 1.0 / (1.0 + np.exp(-logit))
    prob[np.ix_(male, restriction == "Female")] = 0.0
    prob[np.ix_(~male, restriction == "Male")] = 0.0
    has = rng.random((n, p)) < prob

    # Code map: 1–4 ICD-9-like codes per phenotype.
    n_codes = rng.integers(1, 5, size=p)
    map_rows = []
    for j in range(p):
        for m in range(n_codes[j]):
            map_rows.append((f"{100 + j:03d}.{m}{j % 10}", _phecode(j), restriction[j]))
    code_map = pd.DataFrame(map_rows, columns=["ICD9", "PheCode", "sex"])
    codes_of = code_map.groupby("PheCode", sort=False)["ICD9"].apply(list).to_dict()

    ids = np.array([f"{i:05d}" for i in range(n)])
    subj_idx, phen_idx = np.nonzero(has)
    repeats = 1 + rng.poisson(1.5, size=len(subj_idx))
    ev_subj = np.repeat(subj_idx, repeats)
    ev_phen = np.repeat(phen_idx, repeats)
    ev_code = np.array([codes_of[_phecode(j)][rng.integers(len(codes_of[_phecode(j)]))] for j in ev_phen])
    ev_age = np.round(age[ev_subj] - rng.uniform(0, np.minimum(30, age[ev_subj] - 1)), 1)
    n_noise = round(UNMAPPED_EVENT_FRACTION * len(ev_subj))
    noise_subj = rng.integers(0, n, size=n_noise)
    events = pd.DataFrame(
        {
            "subject_id": np.concatenate([ids[ev_subj], ids[noise_subj]]),
            "code": np.concatenate([ev_code, [f"V{rng.integers(10, 99)}.{k % 10}" for k in range(n_noise)]]),
            "age": np.concatenate([ev_age, age[noise_subj]]),
        }
    )
    events = events.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    sex = np.where(male, "M", "F")
    subjects = pd.DataFrame({"subject_id": ids, "sex": sex, "age": age})

    # Wide table: labs driven by the same clusters, with missing values and categorical columns.
    tab = pd.DataFrame({"subject_id": ids, "sex": sex, "age": age})
    tab["bmi"] = 27 + 3 * burden[:, 0] + 1.0 * male + rng.normal(0, 2, n)
    tab["sbp"] = 125 + 8 * burden[:, 1] + 6 * age_z + 4 * male + rng.normal(0, 6, n)
    tab["hba1c"] = 5.6 + 0.6 * burden[:, 2] + rng.normal(0, 0.3, n)
    tab["hemoglobin"] = 13.5 + 1.2 * male + rng.normal(0, 0.8, n)
    tab["n_phenotypes"] = has.sum(axis=1)
    for col in ("bmi", "sbp", "hba1c", "hemoglobin"):
        tab.loc[rng.random(n) < 0.1, col] = np.nan
    smoking = rng.choice(["never", "former", "current"], size=n, p=[0.55, 0.3, 0.15]).astype(object)
    smoking[rng.random(n) < 0.05] = None
    tab["smoking"] = smoking
    tab["site"] = rng.choice(["A", "B", "C"], size=n)

    write_csv(out / "code_map.csv", code_map)
    write_csv(out / "subjects.csv", subjects)
    write_csv(out / "tabular.csv", tab.round(3))
    write_csv(out / "events.csv", events)
    return {
        "male": male,
        "has": has,
        "sex_effect": sex_effect,
        "restriction": restriction,
        "phecodes": [_phecode(j) for j in range(p)],
    }
