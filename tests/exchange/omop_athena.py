"""A tiny Athena-format vocabulary folder for tests: TEST FIXTURE, NOT Athena's concepts.

Every concept id here is made up, in the 2,000,000,000+ range OMOP leaves to local concepts, so
no one can mistake them for real ids; only the vocabulary ids, codes, names, domains and classes
follow Athena's conventions (tab-separated files, a header row, dates YYYYMMDD). Concept 0 is
written as Athena writes it.
"""

from __future__ import annotations

from pathlib import Path

BASE = 2_000_000_000
START, END = "19700101", "20991231"

CONCEPT_HEADER = (
    "concept_id\tconcept_name\tdomain_id\tvocabulary_id\tconcept_class_id\tstandard_concept\t"
    "concept_code\tvalid_start_date\tvalid_end_date\tinvalid_reason"
)


def fixture_concepts(icdo3: dict[str, str]) -> dict[str, tuple[int, str, str, str, str, str, str]]:
    """key → (id, name, domain, vocabulary, class, standard, code). `icdo3` maps an ICD-O-3
    `NNNN/B-CXX.X` code to the domain of the standard concept it 'Maps to'."""
    rows = {
        "none": (
            0,
            "No matching concept",
            "Metadata",
            "None",
            "Undefined",
            "",
            "No matching concept",
        ),
        "male": (BASE + 1, "MALE", "Gender", "Gender", "Gender", "S", "M"),
        "female": (BASE + 2, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
        "registry": (
            BASE + 3,
            "Registry",
            "Type Concept",
            "Type Concept",
            "Type Concept",
            "S",
            "T1",
        ),
        "positive": (BASE + 4, "Positive", "Meas Value", "SNOMED", "Qualifier Value", "S", "P1"),
        "negative": (BASE + 5, "Negative", "Meas Value", "SNOMED", "Qualifier Value", "S", "N1"),
        "first": (
            BASE + 6,
            "Disease First Occurrence",
            "Episode",
            "Episode",
            "Disease Episode",
            "S",
            "E1",
        ),
        "recurrence": (
            BASE + 7,
            "Disease Recurrence",
            "Episode",
            "Episode",
            "Disease Episode",
            "S",
            "E2",
        ),
        "progression": (
            BASE + 8,
            "Disease Progression",
            "Episode",
            "Episode",
            "Disease Episode",
            "S",
            "E3",
        ),
        "regimen": (
            BASE + 9,
            "Treatment Regimen",
            "Episode",
            "Episode",
            "Treatment Episode",
            "S",
            "E4",
        ),
        "f_cond": (
            BASE + 10,
            "condition_occurrence.condition_occurrence_id",
            "Metadata",
            "CDM",
            "Field",
            "S",
            "F1",
        ),
        "f_drug": (
            BASE + 11,
            "drug_exposure.drug_exposure_id",
            "Metadata",
            "CDM",
            "Field",
            "S",
            "F2",
        ),
        "f_proc": (
            BASE + 12,
            "procedure_occurrence.procedure_occurrence_id",
            "Metadata",
            "CDM",
            "Field",
            "S",
            "F3",
        ),
        "f_meas": (BASE + 13, "measurement.measurement_id", "Metadata", "CDM", "Field", "S", "F4"),
        "cdm54": (BASE + 14, "OMOP CDM Version 5.4.0", "Metadata", "CDM", "CDM", "S", "CDM5.4"),
        "pct": (BASE + 15, "percent", "Unit", "UCUM", "Unit", "S", "%"),
        "giga": (BASE + 16, "billion per liter", "Unit", "UCUM", "Unit", "S", "10*9/L"),
        "imatinib": (BASE + 17, "imatinib", "Drug", "RxNorm", "Ingredient", "S", "282388x"),
        "blinatumomab": (
            BASE + 18,
            "Blinatumomab",
            "Drug",
            "RxNorm",
            "Ingredient",
            "S",
            "1599788x",
        ),
    }
    for i, (code, domain) in enumerate(sorted(icdo3.items())):
        rows[f"icdo3:{code}"] = (
            BASE + 100 + i,
            f"ICD-O-3 {code}",
            "Condition",
            "ICDO3",
            "ICDO Condition",
            "",
            code,
        )
        rows[f"std:{code}"] = (
            BASE + 500 + i,
            f"Standard {code}",
            domain,
            "SNOMED",
            "Clinical Finding",
            "S",
            f"S{i}",
        )
    return rows


def write_athena(folder: Path, icdo3: dict[str, str]) -> dict[str, int]:
    """Write the fixture folder; return key → concept id."""
    folder.mkdir(parents=True, exist_ok=True)
    concepts = fixture_concepts(icdo3)
    lines = [CONCEPT_HEADER]
    for cid, name, domain, vocab, cls, std, code in concepts.values():
        lines.append(f"{cid}\t{name}\t{domain}\t{vocab}\t{cls}\t{std}\t{code}\t{START}\t{END}\t")
    _write(folder / "CONCEPT.csv", lines)
    rel = [
        "concept_id_1\tconcept_id_2\trelationship_id\tvalid_start_date\tvalid_end_date\tinvalid_reason"
    ]
    for code in icdo3:
        src, std = concepts[f"icdo3:{code}"][0], concepts[f"std:{code}"][0]
        rel.append(f"{src}\t{std}\tMaps to\t{START}\t{END}\t")
    _write(folder / "CONCEPT_RELATIONSHIP.csv", rel)
    _write(
        folder / "RELATIONSHIP.csv",
        [
            "relationship_id\trelationship_name\tis_hierarchical\tdefines_ancestry\treverse_relationship_id\trelationship_concept_id",
            "Maps to\tNon-standard to Standard map (OMOP)\t0\t0\tMapped from\t0",
            "Mapped from\tStandard to Non-standard map (OMOP)\t0\t0\tMaps to\t0",
        ],
    )
    vocabularies = sorted({c[3] for c in concepts.values()})
    _write(
        folder / "VOCABULARY.csv",
        [
            "vocabulary_id\tvocabulary_name\tvocabulary_reference\tvocabulary_version\tvocabulary_concept_id"
        ]
        + [
            f"{v}\t{v} (test fixture)\t\t{'TEST-FIXTURE v1' if v == 'None' else ''}\t0"
            for v in vocabularies
        ],
    )
    domains = sorted({c[2] for c in concepts.values()})
    _write(
        folder / "DOMAIN.csv",
        ["domain_id\tdomain_name\tdomain_concept_id"] + [f"{d}\t{d}\t0" for d in domains],
    )
    classes = sorted({c[4] for c in concepts.values()})
    _write(
        folder / "CONCEPT_CLASS.csv",
        ["concept_class_id\tconcept_class_name\tconcept_class_concept_id"]
        + [f"{c}\t{c}\t0" for c in classes],
    )
    return {key: row[0] for key, row in concepts.items()}


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
