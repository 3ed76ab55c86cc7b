"""`ccdp map suggest` on hospital exports written by hand in five languages, at several lengths.

Each export is one file, one row per patient and tumour, keyed by the hospital's record number.
The draft must take the same key and the same vocabulary whatever the number of rows, and must
not read record numbers as dates (100234 by %Y%m%d is 4 March 1002).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ccdp.ingest.mapping import apply_mapping, load_mapping
from ccdp.ingest.suggest import suggest, to_yaml


@dataclass(frozen=True)
class Export:
    """A hospital's export as its staff write it: headers, words, encoding and delimiter."""

    country: str
    encoding: str
    delimiter: str
    header: str  # key;given name;sex;birth;diagnosis;topography;morphology;side;vital;last contact
    sexes: tuple[str, str]  # male, female
    sides: tuple[str, str, str]  # right, left, not paired
    vital: tuple[str, str]  # alive, dead (a yes/no "died?" column: no, yes)
    date: str  # day, month, year -> text

    def key(self, i: int) -> str:
        """Record numbers: six digits (eight for the German case numbers), starting 1002."""
        return str(10020101 + i) if self.country == "DE" else str(100201 + 3 * i)

    def text(self, rows: int) -> str:
        names = ("João", "Inês", "José", "Conceição", "Zoé", "Jürgen", "Niccolò", "Ana")
        lines = [self.header]
        for i in range(rows):
            birth = self.date.format(d=(i * 7) % 28 + 1, m=(i * 5) % 12 + 1, y=2006 + i % 12)
            diag = self.date.format(d=(i * 11) % 28 + 1, m=(i * 7) % 12 + 1, y=2019 + i % 4)
            last = self.date.format(d=(i * 13) % 28 + 1, m=(i * 3) % 12 + 1, y=2024)
            cells = [
                self.key(i),
                names[i % len(names)],
                self.sexes[i % 2],
                birth,
                diag,
                ("C42.1", "C71.9", "C64.9", "C22.0")[i % 4],
                ("9836/3", "9440/3", "8960/3", "8970/3")[i % 4],
                self.sides[i % 3],
                self.vital[1] if i % 4 == 1 else self.vital[0],
                last,
            ]
            lines.append(self.delimiter.join(cells))
        return "\r\n".join(lines) + "\r\n"


DMY = "{d:02d}/{m:02d}/{y}"
EXPORTS = {
    "pt": Export(
        "BR",
        "cp1252",
        ";",
        "Prontuário;Nome;Sexo;Data de nascimento;Data do diagnóstico;Topografia;Morfologia;"
        "Lateralidade;Óbito;Data do último contato",
        ("Masculino", "Feminino"),
        ("Direito", "Esquerdo", "Não se aplica"),
        ("Não", "Sim"),
        DMY,
    ),
    "es": Export(
        "ES",
        "cp1252",
        ";",
        "NHC;Nombre;Sexo;Fecha de nacimiento;Fecha de diagnóstico;Topografía;Morfología;"
        "Lateralidad;Estado vital;Fecha del último contacto",
        ("Hombre", "Mujer"),
        ("Derecho", "Izquierdo", "No aplica"),
        ("Vivo", "Fallecido"),
        DMY,
    ),
    "fr": Export(
        "FR",
        "utf-8",
        ";",
        "N° dossier;Prénom;Sexe;Date de naissance;Date du diagnostic;Topographie;Morphologie;"
        "Latéralité;Statut vital;Date des dernières nouvelles",
        ("Masculin", "Féminin"),
        ("Droit", "Gauche", "Sans objet"),
        ("Vivant", "Décédé"),
        DMY,
    ),
    "de": Export(
        "DE",
        "latin-1",
        ";",
        "Fallnummer;Vorname;Geschlecht;Geburtsdatum;Diagnosedatum;Lokalisation;Histologie;"
        "Seite;Verstorben;Letzter Kontakt",
        ("männlich", "weiblich"),
        ("rechts", "links", "entfällt"),
        ("nein", "ja"),
        "{d:02d}.{m:02d}.{y}",
    ),
    "it": Export(
        "IT",
        "utf-8",
        ",",
        "N. cartella,Nome,Sesso,Data di nascita,Data della diagnosi,Sede,Morfologia,Lato,"
        "Stato in vita,Data ultimo contatto",
        ("Maschio", "Femmina"),
        ("Destro", "Sinistro", "Non applicabile"),
        ("vivo", "deceduto"),
        DMY,
    ),
}


@pytest.mark.parametrize("rows", [10, 15, 25, 40])
@pytest.mark.parametrize("lang", sorted(EXPORTS))
def test_hospital_export_draft_is_the_same_at_every_length(
    tmp_path: Path, lang: str, rows: int
) -> None:
    export = EXPORTS[lang]
    site = tmp_path / "export"  # no country in the folder's name: --country gives it
    site.mkdir()
    (site / "registro.csv").write_bytes(export.text(rows).encode(export.encoding))
    text = to_yaml(suggest(site, country=export.country), site)
    assert "%Y%m%d" not in text and "excel_serial" not in text, text
    assert f"country {export.country} given by --country" in text
    assert "folder name" not in text
    (tmp_path / "draft.yaml").write_text(text, encoding="utf-8")
    spec = load_mapping(tmp_path / "draft.yaml")
    columns = export.header.split(export.delimiter)
    patient, tumour = spec.tables["patient"][0], spec.tables["tumour"][0]
    assert patient.fields["patient_id"].column == columns[0], text
    assert tumour.fields["patient_id"].column == columns[0], text
    wanted = {"birth_date": 3, "sex": 2, "vital_status": 8, "last_contact_date": 9}
    for name, at in wanted.items():
        assert patient.fields[name].column == columns[at], (name, text)
    tumour_fields = {"diagnosis_date": 4, "topography": 5, "morphology": 6, "laterality": 7}
    for name, at in tumour_fields.items():
        assert tumour.fields[name].column == columns[at], (name, text)
    assert spec.sources[next(iter(spec.sources))].date_formats == [
        "%d.%m.%Y" if lang == "de" else "%d/%m/%Y"
    ]
    out = apply_mapping(spec, site)
    got = out["patient"]
    assert got["patient_id"].tolist() == [export.key(i) for i in range(rows)]
    assert got["sex"].tolist() == [("male", "female")[i % 2] for i in range(rows)]
    assert got["vital_status"].tolist() == ["dead" if i % 4 == 1 else "alive" for i in range(rows)]
    assert got["birth_date"].iloc[1] == "2007-06-08"
    sides = out["tumour"]["laterality"].tolist()
    assert sides[:3] == ["right", "left", "not_paired"], text


def test_record_numbers_are_not_dates_whatever_the_pandas() -> None:
    """pandas 3 reads 100234 by %Y%m%d as 1002-03-04; a digits-only format needs every digit."""
    import pandas as pd

    from ccdp.ingest.convert import parse_dates

    got = parse_dates(pd.Series(["20120304", "100234", "2012034"]), "%Y%m%d", allow_month=False)
    assert got.tolist()[0] == "2012-03-04" and got.iloc[1:].isna().all()
