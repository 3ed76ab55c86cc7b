"""`ccdp map suggest`: a draft that loads, applies, and marks what it is unsure of."""

from __future__ import annotations

from pathlib import Path

import openpyxl

from ccdp.ingest.mapping import apply_mapping, load_mapping
from ccdp.ingest.suggest import field_synonyms, name_score, norm_name, scalar, suggest, to_yaml

PATIENTS = (
    "num_patient;sexe;date_naissance;statut;date_der_nouv;nir;prénom\n"
    "P1;1;03/05/2010;vivant;01/02/2020;123;Léa\n"
    "P2;2;NA;décédé;15/06/2019;456;Zoé\n"
    "P3;2;31/12/2011;vivant;13/01/2021;789;Éric\n"
    "P4;1;05/11/2012;-;01/02/2020;321;Noé\n"
)
TUMOURS = (
    "id_tumeur,nir,date_diag,topo,morpho\n"
    "T1,123,2012-01-05,C421,9836/3\n"
    "T2,456,2013-02-07,C220,89703\n"
    "T3,789,2014-03-09,C649,8960/3\n"
)


def test_names_in_many_languages() -> None:
    assert norm_name("Date de naissance") == "date_de_naissance"
    assert norm_name("Płeć") == "plec"
    for col in ("Geburtsdatum", "data_nascita", "data_urodzenia", "fecha_nacimiento", "DOB"):
        assert name_score(col, field_synonyms("patient", "birth_date")) == 1.0, col
    assert name_score("pat_geschlecht", field_synonyms("patient", "sex")) >= 0.75
    assert name_score("colour", field_synonyms("patient", "sex")) == 0.0


def test_scalars_read_back_as_the_same_text() -> None:
    import yaml

    from ccdp.ingest.specbase import StringLoader

    for text in ("1", "01", "no", "NA", "-", "%d/%m/%Y", "décédé", "a: b", 'q"t', "null", " x"):
        assert yaml.load(f"k: {scalar(text)}", Loader=StringLoader) == {"k": text}


def test_suggest_french_site_with_join(tmp_path: Path) -> None:
    site = tmp_path / "FR"
    site.mkdir()
    (site / "patients.csv").write_bytes(PATIENTS.encode("latin-1"))
    (site / "tumeurs.csv").write_text(TUMOURS)
    draft = suggest(site)
    text = to_yaml(draft, site)
    (tmp_path / "draft.yaml").write_text(text)
    spec = load_mapping(tmp_path / "draft.yaml")
    patient = spec.tables["patient"][0]
    assert patient.fields["country"].constant == "FR"  # from the folder name, flagged
    assert "country FR taken from the folder name" in text
    assert patient.fields["sex"].values == {"1": "male", "2": "female"}
    assert patient.fields["vital_status"].values == {"vivant": "alive", "décédé": "dead"}
    assert spec.sources["patients"].date_formats == ["%d/%m/%Y"]
    assert set(spec.sources["patients"].missing) == {"NA", "-"}
    assert patient.identifiers is not None and patient.identifiers.national_id.column == "nir"
    tumour = spec.tables["tumour"][0]
    assert tumour.join[0].on == {"nir": "nir"} and tumour.fields["patient_id"].column == (
        "num_patient"
    )
    assert "# check:" in text
    out = apply_mapping(spec, site)
    assert out["patient"]["birth_date"].tolist() == ["2010-05-03", None, "2011-12-31", "2012-11-05"]
    assert out["tumour"]["patient_id"].tolist() == ["P1", "P2", "P3"]
    assert out["tumour"]["topography"].tolist() == ["C42.1", "C22.0", "C64.9"]


def _dated_site(tmp_path: Path, dates: list[tuple[str, str]]) -> Path:
    site = tmp_path / "US"
    site.mkdir()
    (site / "patients.csv").write_text(
        "patient_id,sex,birth_date,vital_status,last_contact_date\n"
        + "".join(f"P{i},male,{b},alive,{c}\n" for i, (b, c) in enumerate(dates))
    )
    return site


def _no_list_with_both_orders(text: str) -> None:
    import re

    for line in text.splitlines():
        if re.match(r"\s*date_formats:", line):
            assert not ("%d/%m" in line and "%m/%d" in line), line


def test_suggest_takes_the_day_month_order_from_the_data(tmp_path: Path) -> None:
    """01/13/2017 can only be month first: the whole source is, and 03/04/2012 is 4 March;
    another file whose values fit both orders takes it too, with a check note."""
    site = _dated_site(tmp_path, [("01/13/2017", "02/01/2020"), ("03/04/2012", "05/06/2021")])
    (site / "tumours.csv").write_text(
        "tumour_id,patient_id,diagnosis_date,topography,morphology\n"
        "T1,P0,03/04/2018,C421,9836/3\nT2,P1,05/06/2013,C220,8970/3\n"
    )
    draft = suggest(site)
    text = to_yaml(draft, site)
    _no_list_with_both_orders(text)
    (tmp_path / "us.yaml").write_text(text)
    spec = load_mapping(tmp_path / "us.yaml")
    assert spec.sources["patients"].date_formats == ["%m/%d/%Y"]
    assert spec.sources["tumours"].date_formats == ["%m/%d/%Y"]
    assert "fits both day/month orders; month first as in patients.csv" in text
    out = apply_mapping(spec, site)
    assert out["patient"]["birth_date"].tolist() == ["2017-01-13", "2012-03-04"]
    assert out["tumour"]["diagnosis_date"].tolist() == ["2018-03-04", "2013-05-06"]


def test_suggest_asks_when_the_data_cannot_tell_the_order(tmp_path: Path) -> None:
    """Every value fits both orders: no order is proposed, the draft asks (and still loads;
    the values then stay raw, so ingest quarantines them rather than guess)."""
    site = _dated_site(tmp_path, [("01/12/2017", "02/01/2020"), ("03/04/2012", "05/06/2021")])
    text = to_yaml(suggest(site), site)
    _no_list_with_both_orders(text)
    assert "# date_formats: [...]  # check: TODO day/month order unknown" in text
    assert "then give '%d/%m/%Y' or '%m/%d/%Y'" in text
    assert "birth_date: birth_date  # check: TODO day/month order undecided" in text
    (tmp_path / "q.yaml").write_text(text)
    spec = load_mapping(tmp_path / "q.yaml")
    assert not spec.sources["patients"].date_formats
    out = apply_mapping(spec, site)
    assert out["patient"]["birth_date"].tolist() == ["01/12/2017", "03/04/2012"]


def test_suggest_says_when_the_data_mixes_orders(tmp_path: Path) -> None:
    site = _dated_site(tmp_path, [("01/13/2017", "02/01/2020"), ("23/04/2012", "05/06/2021")])
    text = to_yaml(suggest(site), site)
    _no_list_with_both_orders(text)
    mixed = "TODO the data mixes day/month orders: 1 value(s) only day first (e.g. 23/04/2012)"
    assert mixed in text
    assert "1 only month first (e.g. 01/13/2017)" in text
    (tmp_path / "mixed.yaml").write_text(text)
    assert not load_mapping(tmp_path / "mixed.yaml").sources["patients"].date_formats


def test_suggest_german_workbook(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Patienten"
    sheet.append(
        [
            "PatNr",
            "Geschlecht",
            "Geburtsdatum",
            "Land",
            "Vitalstatus",
            "Letzter Kontakt",
            "Sterbedatum",
        ]
    )
    sheet.append(["D1", "w", 40123, "DE", "lebend", 43831, None])
    sheet.append(["D2", "m", 40500, "DE", "verstorben", 43000, 43000])
    sheet.append(["D3", "m", 41000, "DE", "lebend", 44000, None])
    tumours = book.create_sheet("Tumoren")
    tumours.append(["TumorNr", "PatNr", "Diagnosedatum", "Lokalisation", "Histologie"])
    tumours.append(["T1", "D1", 41500, "C71.9", "9470/3"])
    tumours.append(["T2", "D2", 41600, "C64.9", "8960/3"])
    book.save(tmp_path / "register.xlsx")
    draft = suggest(tmp_path / "register.xlsx")
    (tmp_path / "d.yaml").write_text(to_yaml(draft, tmp_path))
    spec = load_mapping(tmp_path / "d.yaml")
    fields = spec.tables["patient"][0].fields
    assert {k: v.column for k, v in fields.items()} == {
        "patient_id": "PatNr",
        "sex": "Geschlecht",
        "birth_date": "Geburtsdatum",
        "country": "Land",
        "vital_status": "Vitalstatus",
        "last_contact_date": "Letzter Kontakt",
        "death_date": "Sterbedatum",
    }
    assert spec.tables["tumour"][0].fields["patient_id"].column == "PatNr"
    out = apply_mapping(spec, tmp_path / "register.xlsx")
    assert out["patient"]["birth_date"].tolist() == ["2009-11-06", "2010-11-18", "2012-04-01"]
    assert out["tumour"]["morphology"].tolist() == ["9470", "8960"]


def test_suggest_on_native_export_reproduces_it(tmp_path: Path) -> None:
    """On the model's own layout, the draft maps every field and reproduces every table."""
    import pandas as pd

    from ccdp.model import load_model
    from ccdp.synth.generate import generate

    generate(tmp_path, countries="KE", patients=150, seed=3)
    site = tmp_path / "KE"
    draft = suggest(site)
    (tmp_path / "native.yaml").write_text(to_yaml(draft, site))
    spec = load_mapping(tmp_path / "native.yaml")
    out = apply_mapping(spec, site)
    for tdef in load_model().tables.values():
        if tdef.name == "population":
            continue
        native = pd.read_csv(site / f"{tdef.name}.csv", dtype=str, keep_default_na=False)
        if native.empty and tdef.name not in out:
            continue  # a header-only file (e.g. no trial enrolment in a small draw) maps nothing
        got = out[tdef.name]
        for fdef in tdef.input_fields:
            expected = native[fdef.name].astype(object).replace("", None).tolist()
            assert got[fdef.name].tolist() == expected, (tdef.name, fdef.name)


def test_suggest_wide_relapse_columns_become_event_rows(tmp_path: Path) -> None:
    site = tmp_path / "IT"
    site.mkdir()
    (site / "pazienti.csv").write_text(
        "id_paziente;sesso;data_nascita;stato_vitale;data_ultimo_contatto\n"
        "I1;M;03/05/2010;vivo;01/02/2020\nI2;F;04/06/2011;deceduto;15/06/2019\n"
        "I3;F;14/07/2012;vivo;13/01/2021\n"
    )
    (site / "tumori.csv").write_text(
        "id_tumore;id_paziente;data_diagnosi;topografia;morfologia;recidiva1_data;"
        "recidiva1_sede;recidiva2_data;recidiva2_sede\n"
        "T1;I1;05/01/2012;C421;98363;01/04/2013;midollo;01/06/2014;SNC\n"
        "T2;I2;07/02/2013;C220;89703;;;;\n"
        "T3;I3;09/03/2014;C649;89603;01/01/2015;midollo;;\n"
    )
    (tmp_path / "it.yaml").write_text(to_yaml(suggest(site), site))
    spec = load_mapping(tmp_path / "it.yaml")
    event = spec.tables["event"][0]
    assert event.unpivot is not None and event.unpivot.columns["recidiva_data"] == [
        "recidiva1_data",
        "recidiva2_data",
    ]
    out = apply_mapping(spec, site)["event"]
    got = out[["event_id", "tumour_id", "event_type", "event_date", "relapse_site"]]
    assert [tuple(r) for r in got.itertuples(index=False)] == [
        ("T1-1", "T1", "relapse", "2013-04-01", "bone_marrow"),
        ("T1-2", "T1", "relapse", "2014-06-01", "cns"),
        ("T3-1", "T3", "relapse", "2015-01-01", "bone_marrow"),
    ]


def test_suggest_redcap_repeat_instrument_feeds_events(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text(
        "record_id,redcap_repeat_instrument,redcap_repeat_instance,sexo,data_nascimento,"
        "situacao_vital,data_ultimo_contato,id_tumor,data_diagnostico,topografia,morfologia,"
        "data_recidiva,local_recidiva\n"
        "B1,,,1,2010-05-03,vivo,2020-02-01,BT1,2012-01-05,C42.1,9836/3,,\n"
        "B1,recidiva,1,,,,,,,,,2013-04-01,medula\n"
        "B1,recidiva,2,,,,,,,,,2014-06-01,SNC\n"
        "B2,,,2,2011-06-04,falecido,2019-06-15,BT2,2013-02-07,C22.0,8970/3,,\n"
    )
    draft = suggest(tmp_path / "export.csv", country="BR")
    (tmp_path / "br.yaml").write_text(to_yaml(draft, tmp_path))
    spec = load_mapping(tmp_path / "br.yaml")
    assert spec.tables["patient"][0].fields["patient_id"].column == "record_id"
    assert spec.tables["tumour"][0].fields["tumour_id"].column == "id_tumor"
    event = spec.tables["event"][0]
    assert spec.sources[event.source].where[0].equals == "recidiva"
    out = apply_mapping(spec, tmp_path / "export.csv")
    assert out["patient"]["sex"].tolist() == ["male", "female"]
    assert out["patient"]["country"].tolist() == ["BR", "BR"]
    got = out["event"][["event_id", "tumour_id", "event_type", "event_date", "relapse_site"]]
    assert [tuple(r) for r in got.itertuples(index=False)] == [
        ("BT1-1", "BT1", "relapse", "2013-04-01", "bone_marrow"),
        ("BT1-2", "BT1", "relapse", "2014-06-01", "cns"),
    ]
