"""Build real DuckDB node stores for tests: the model's DDL, then rows (no mocks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ccdp.model import load_model


def build_store(
    path: Path,
    rows: Mapping[str, Iterable[dict[str, Any]]],
    policy: dict[str, Any] | None = None,
    defaults: bool = False,
) -> Path:
    """A store file with every model table created and the given rows inserted, under the exact
    test policy (`EXACT`, updated by `policy`), or with no policy file (the node's defaults:
    the release tiers) when `defaults`."""
    if not defaults:
        from ccdp.disclosure.policy import NodePolicy, save_policy

        save_policy(path, NodePolicy.model_validate({**EXACT, **(policy or {})}))
    model = load_model()
    con = duckdb.connect(str(path))
    try:
        for table in model.tables.values():
            con.execute(table.ddl())
        for name, recs in rows.items():
            frame = pd.DataFrame(list(recs))
            if frame.empty:
                continue
            cols = ", ".join(f'"{c}"' for c in frame.columns)
            con.register("incoming", frame)
            con.execute(f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM incoming')
            con.unregister("incoming")
    finally:
        con.close()
    return path


GROUPS = ["I", "II", "III", "IV", "V", "VI"]


def random_registry(
    seed: int, n: int, country: str, prefix: str, years: tuple[int, int] = (2005, 2014)
) -> dict[str, list[dict[str, Any]]]:
    """A plausible random registry: patients, one tumour each, events, trials, population."""
    rng = np.random.default_rng(seed)
    patients, tumours, events, trials = [], [], [], []
    for i in range(n):
        pid, tid = f"{prefix}P{i}", f"{prefix}T{i}"
        diag = date(int(rng.integers(years[0], years[1] + 1)), 1, 1) + timedelta(
            days=int(rng.integers(0, 365))
        )
        birth = diag - timedelta(days=int(rng.integers(30, 365 * 19)))
        follow = int(rng.integers(10, 3000))
        dead = rng.random() < 0.25
        last = diag + timedelta(days=follow)
        patients.append(
            {
                "patient_id": pid,
                "sex": str(rng.choice(["male", "female"])),
                "birth_date": birth,
                "country": country,
                "vital_status": "dead" if dead else "alive",
                "last_contact_date": last,
                "death_date": last if dead else None,
            }
        )
        tumours.append(
            {
                "tumour_id": tid,
                "patient_id": pid,
                "diagnosis_date": diag,
                "topography": "C42.1",
                "morphology": "9836",
                "behaviour": 3,
                "iccc_group": str(rng.choice(GROUPS, p=[0.4, 0.2, 0.2, 0.1, 0.05, 0.05])),
                "immunophenotype": str(rng.choice(["b_precursor", "t"])),
                "wbc_at_diagnosis": float(rng.gamma(2, 20)),
            }
        )
        if rng.random() < 0.3:
            events.append(
                {
                    "event_id": f"{prefix}E{i}",
                    "tumour_id": tid,
                    "event_type": "relapse",
                    "event_date": diag + timedelta(days=int(rng.integers(0, follow + 1))),
                    "relapse_site": "bone_marrow",
                }
            )
        if rng.random() < 0.5:
            trials.append({"patient_id": pid, "trial": "T1", "arm": str(rng.choice(["a", "b"]))})
    population = [
        {"country": country, "year": y, "sex": s, "age_group": a, "population": float(p)}
        for y in range(years[0], years[1] + 1)
        for s in ("male", "female")
        for a, p in zip(
            ["0", "1-4", "5-9", "10-14", "15-19"],
            rng.integers(50_000, 400_000, size=5),
            strict=True,
        )
    ]
    return {
        "patient": patients,
        "tumour": tumours,
        "event": events,
        "trial_enrolment": trials,
        "population": population,
    }


def synth_stores(out: Path, seed: int, patients: int) -> list[Path]:
    """`ccdp synth` registries for FR and DE in `out`, each ingested into its own store, as a
    user would make them (the CLI); returns the stores (fr.duckdb, de.duckdb)."""
    from tests.conftest import run_ccdp

    run_ccdp("synth", out, "--countries", "FR,DE", "--seed", seed, "--patients", patients)
    stores = []
    for country in ("FR", "DE"):
        store = out / f"{country.lower()}.duckdb"
        run_ccdp("ingest", out / country, "--store", store)
        stores.append(exact_policy(store))
    return stores


SPECIMEN_TYPES = ["bone_marrow", "peripheral_blood", "dna", "csf"]


def add_specimens(
    rows: dict[str, list[dict[str, Any]]], seed: int, most: int = 4, available: float = 0.85
) -> dict[str, list[dict[str, Any]]]:
    """Give each tumour 0 to `most` - 1 biobank specimens of random types; about `available`
    of them still available (a few with availability not recorded)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in rows["tumour"]:
        for k in range(int(rng.integers(0, most))):
            u = rng.random()
            out.append(
                {
                    "specimen_id": f"{t['tumour_id']}S{k}",
                    "tumour_id": t["tumour_id"],
                    "type": str(rng.choice(SPECIMEN_TYPES, p=[0.5, 0.3, 0.15, 0.05])),
                    "available": None if u > 0.97 else bool(u < available),
                }
            )
    rows["specimen"] = rows.get("specimen", []) + out
    return rows


def specimen_truth(store: Path, by: list[str], where: str = "TRUE") -> pd.DataFrame:
    """Available specimens and their distinct children per group of `by` (columns of `s`
    specimen, `t` tumour, `p` patient), straight from the store's tables: the reference a
    released count is checked on."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        cols = ", ".join(by)
        sql = (
            f"SELECT {cols + ', ' if by else ''}count(*) AS n, "
            "count(DISTINCT t.patient_id) AS children "
            "FROM specimen s JOIN tumour t ON t.tumour_id = s.tumour_id "
            "JOIN patient p ON p.patient_id = t.patient_id "
            f"WHERE s.available AND {where} {'GROUP BY ALL' if by else ''}"
        )
        return con.execute(sql).df()
    finally:
        con.close()


# The release tiers' test policy (issue 28): counts as they are and every exact answer at once,
# for tests whose subject is an analysis's exactness or the exact tier's own rules, not the
# tiers (tests/disclosure/test_tiers.py runs the defaults). A node sets the same for published
# or public data.
EXACT = {"counts": "exact", "exact_release": "any"}
EXACT_YAML = "counts: exact\nexact_release: any\n"  # the same, as the start of a policy file


def exact_policy(store: Path, **settings: Any) -> Path:
    """Give `store` the exact test policy (plus `settings`), written beside it as a node's own
    policy file; returns the store."""
    from ccdp.disclosure.policy import NodePolicy, load_policy, save_policy

    policy = load_policy(store).model_dump()
    save_policy(store, NodePolicy.model_validate({**policy, **EXACT, **settings}))
    return store
