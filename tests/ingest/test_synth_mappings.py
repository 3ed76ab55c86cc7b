"""The synthetic partnership's messy exports, ingested with examples/mappings/<CC>.yaml.

(a) Ingested through the pipeline, every accepted row equals the same seed's native export, and
    only rows listed as injected errors in truth.json are quarantined.
(b) `ccdp map suggest`, without help, feeds >= 90% of each hand-written spec's fields from the
    same place (file and column, or the same constant); its draft, applied as is, also
    reproduces the native rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ccdp.ingest.mapping import apply_mapping, load_mapping
from ccdp.ingest.pipeline import ingest_frames, ingest_native
from ccdp.ingest.quarantine import quarantine_rows
from ccdp.ingest.suggest import agreement, suggest, to_yaml
from ccdp.model import load_model
from tests.conftest import ROOT

MAPPINGS = ROOT / "examples" / "mappings"
COUNTRIES = ["FR", "DE", "IT", "PL", "BR", "KE"]
SEED = 1
PATIENTS = 700


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same seed drawn as native and as messy exports (all countries: ids depend on it)."""
    from ccdp.synth.generate import generate

    base = tmp_path_factory.mktemp("synth")
    generate(base / "native", countries=COUNTRIES, patients=PATIENTS, seed=SEED)
    generate(base / "messy", countries=COUNTRIES, patients=PATIENTS, seed=SEED, format="messy")
    return base


def test_every_country_has_a_mapping() -> None:
    assert sorted(p.stem for p in MAPPINGS.glob("*.yaml")) == sorted(COUNTRIES)


def _store_rows(store: Path, table: str) -> pd.DataFrame:
    tdef = load_model().table(table)
    cols = ", ".join(f'"{f.name}"' for f in tdef.input_fields)
    with duckdb.connect(str(store), read_only=True) as con:
        frame = con.execute(f'SELECT {cols} FROM "{table}"').df()
    # text columns as object with None: under pandas 3 DuckDB gives a column of text the string
    # dtype and an all-NULL one object, so equal stores would differ in dtype only
    text = frame.select_dtypes(include=["object", "string"]).columns
    frame[text] = frame[text].astype(object).where(frame[text].notna(), None)
    return frame.set_index(tdef.primary_key).sort_index()


def _injected(exports: Path, country: str) -> list[dict]:
    truth = json.loads((exports / "messy" / "truth.json").read_text(encoding="utf-8"))
    return [e for e in truth["errors"] if e["country"] == country]


def _caught(store: Path) -> dict[tuple[str, int], set[str]]:
    """(table, source row) -> edit ids, for quarantined rows and accepted rows with warnings."""
    out: dict[tuple[str, int], set[str]] = {}
    for q in quarantine_rows(store):
        out.setdefault((q["table"], int(q["source_row"])), set()).update(q["edit_ids"])
    with duckdb.connect(str(store), read_only=True) as con:
        flags = con.execute("SELECT table_name, source_row, edit_id FROM quality_flag").fetchall()
    for table, row, edit in flags:
        out.setdefault((table, int(row)), set()).add(edit)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("country", COUNTRIES)
def test_messy_export_matches_native_on_every_accepted_row(
    exports: Path, tmp_path: Path, country: str
) -> None:
    frames = apply_mapping(load_mapping(MAPPINGS / f"{country}.yaml"), exports / "messy" / country)
    messy_store, native_store = tmp_path / "messy.duckdb", tmp_path / "native.duckdb"
    report = ingest_frames(messy_store, frames, f"messy/{country}", progress=False)
    native = ingest_native(native_store, exports / "native" / country, progress=False)
    assert native.quarantined == 0
    assert report.rows_read == report.accepted + report.quarantined
    for table in frames:
        got, want = _store_rows(messy_store, table), _store_rows(native_store, table)
        assert got.index.isin(want.index).all(), f"{country} {table}: keys not in native"
        pd.testing.assert_frame_equal(got, want.loc[got.index], obj=f"{country} {table}")
    injected = _injected(exports, country)
    caught = _caught(messy_store)
    for e in injected:  # every listed error is caught, by the edit the truth file names
        where = (e["model_field"].split(".")[0], int(e["row"]))
        assert e["edit_id"] in caught.get(where, set()), f"{country}: {e} not caught: {caught}"
    # No clean row is quarantined: every quarantined row is a listed error, a child of one
    # (its parent was quarantined), or shares a listed error's source row (a REDCap record row
    # feeds both patient and tumour).
    listed = {(e["model_field"].split(".")[0], int(e["row"])) for e in injected}
    listed_rows = {
        (Path(e["file"]).name, int(e["row"])) for e in injected if not e["file"].endswith(".xlsx")
    }
    for q in quarantine_rows(messy_store):
        row = int(q["source_row"])
        explained = (
            (q["table"], row) in listed
            or (q["source_file"], row) in listed_rows
            or q["edit_ids"] == ["ref.parent_quarantined"]
        )
        assert explained, f"{country}: clean row quarantined: {q}"


@pytest.mark.slow
@pytest.mark.parametrize("country", COUNTRIES)
def test_suggest_gets_the_field_mappings_right(exports: Path, tmp_path: Path, country: str) -> None:
    site = exports / "messy" / country
    draft_path = tmp_path / f"{country}.yaml"
    draft_path.write_text(to_yaml(suggest(site), site), encoding="utf-8")
    draft, reference = load_mapping(draft_path), load_mapping(MAPPINGS / f"{country}.yaml")
    per_table = agreement(draft, reference)
    right = sum(r for r, _ in per_table.values())
    total = sum(t for _, t in per_table.values())
    assert right / total >= 0.9, f"{country}: {right}/{total} {per_table}"
    # The draft as it stands (value maps, date formats, missing tokens included) gives the same
    # canonical text as the hand-written spec on every row.
    want = apply_mapping(reference, site)
    got = apply_mapping(draft, site)
    for table, frame in want.items():
        fields = [f.name for f in load_model().table(table).input_fields]
        pd.testing.assert_frame_equal(
            got[table][fields].reset_index(drop=True),
            frame[fields].reset_index(drop=True),
            obj=f"{country} {table}",
        )


@pytest.mark.slow
def test_identifiers_when_present_are_pseudonymised(tmp_path: Path) -> None:
    """The same mapping reads an export made with --with-identifiers: keys become pseudonyms and
    no name reaches the store."""
    from ccdp.synth.generate import generate

    generate(
        tmp_path / "out",
        countries=["FR", "DE"],
        patients=120,
        seed=4,
        format="messy",
        with_identifiers=True,
    )
    site = tmp_path / "out" / "FR"
    frames = apply_mapping(load_mapping(MAPPINGS / "FR.yaml"), site)
    names = frames["patient"]["_identifier_family_name"]
    assert names.notna().all() and frames["patient"]["_identifier_national_id"].notna().all()
    store = tmp_path / "fr.duckdb"
    report = ingest_frames(store, frames, "FR", progress=False)
    assert report.pseudonymised
    with duckdb.connect(str(store), read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT patient_id FROM patient").fetchall()]
        text = " ".join(
            str(v) for row in con.execute("SELECT * FROM patient").fetchall() for v in row
        )
    assert ids and all(i.startswith("psn_") for i in ids)
    assert not any(n in text for n in names.head(20))
