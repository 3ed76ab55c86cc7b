"""Phenopacket JSON written by DuckDB: one SQL query per batch makes every line of the file.

Building a protobuf message per patient and converting it with `json_format` costs about 25
times DuckDB's own `COPY ... TO json` of the same rows; the export must stay within a few times
that on a million patients. So the documents are assembled as text in SQL, the mapping of
`phenopackets_build` (the reference the tests compare every document with) written as
expressions: keys in the order and spelling `json_format` writes them (field-number order,
lowerCamelCase), absent parts left out (`concat_ws` skips NULLs), enums as names, strings escaped
by `to_json`, ages computed with calendar months clipped to the month's end like the reference.
The lookups (ICD-O-3 labels, the NCIt map, local labels, fixed terms) are small temporary tables
or CASE expressions; `metaData` is made by the protobuf builder once per set of prefixes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pyarrow as pa
from google.protobuf.json_format import MessageToDict

from ccdp.exchange.phenopackets_build import PROCEDURES, Context, meta_data
from ccdp.exchange.phenopackets_terms import (
    LOCAL,
    RESOURCES,
    Terms,
    fixed_terms,
    local_pair,
    morphology_labels,
    ncit_for_icdo3,
    topography_labels,
)
from ccdp.model import load_model

PREFIXES = sorted([*RESOURCES, LOCAL])
"""Every CURIE prefix the export may use; a document's prefixes are a bit mask over these."""

BIT = {p: 1 << i for i, p in enumerate(PREFIXES)}


def lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def obj(*members: tuple[str, str]) -> str:
    """A JSON object from (key, SQL expression of JSON text or NULL); NULL members are left out
    (json_format omits unset fields), in the order given (callers give field-number order)."""
    parts = ", ".join(f"'\"{key}\":' || ({expr})" for key, expr in members)
    return f"('{{' || concat_ws(',', {parts}) || '}}')"


def obj1(first: tuple[str, str], *members: tuple[str, str]) -> str:
    """`obj` for an object whose first member is always there: one concat() (NULL arguments
    skipped) instead of a concatenation per member, the cheaper for the many small objects."""
    key, expr = first
    rest = ", ".join(f"',\"{k}\":' || ({e})" for k, e in members)
    return f"""concat('{{"{key}":', coalesce({expr}, 'null'), {rest}, '}}')"""


def term(ident: str, label: str) -> str:
    """An OntologyClass from SQL expressions of its id and label."""
    return obj1(("id", f"to_json({ident})"), ("label", f"to_json({label})"))


def const_term(ident: str, label: str) -> str:
    """A constant OntologyClass as a SQL literal of its JSON."""
    return lit(json.dumps({"id": ident, "label": label}, ensure_ascii=False, separators=(",", ":")))


def local_id(name: str, value: str) -> str:
    """SQL of `phenopackets_terms.local_id`: the value percent-encoded (url_encode keeps the
    same unreserved characters as urllib's quote with safe='')."""
    return f"({lit(f'{LOCAL}:{name}.')} || url_encode({value}))"


def nz(expr: str) -> str:
    """Python truthiness of a text column: neither NULL nor empty."""
    return f"coalesce({expr} <> '', false)"


def case(expr: str, mapping: Mapping[str, str], default: str = "NULL") -> str:
    """CASE expr WHEN key THEN value (values are SQL already) ... ELSE default END."""
    if not mapping:
        return default
    whens = " ".join(f"WHEN {lit(k)} THEN {v}" for k, v in mapping.items())
    return f"(CASE {expr} {whens} ELSE {default} END)"


def local_label(table: str, field: str, value: str) -> str:
    """SQL of the label `Terms.local` gives a model value (the model's words, '_' as spaces)."""
    labels = load_model().table(table).field(field).labels or {}
    words = {k: lit(str(v).replace("_", " ")) for k, v in labels.items()}
    return case(value, words, f"replace({value}, '_', ' ')")


def local_term(table: str, field: str, value: str) -> str:
    """The OntologyClass `Terms.local` makes: constant JSON for the model's listed values (made
    by `phenopackets_terms`), built in SQL for any other value."""
    labels = load_model().table(table).field(field).labels or {}
    known = {v: const_term(*local_pair(table, field, v)) for v in labels}
    built = term(local_id(f"{table}.{field}", value), local_label(table, field, value))
    return case(value, known, built)


def fixed(field: str, value: str) -> tuple[str, str]:
    """(term JSON, prefix bit) of `data/pheno_terms.csv` for `field`; NULL / 0 when unmapped."""
    rows = {v: t for (f, v), t in fixed_terms().items() if f == field}
    terms = case(value, {v: const_term(*t) for v, t in rows.items()})
    bits = case(value, {v: str(BIT[t[0].split(":", 1)[0]]) for v, t in rows.items()}, "0")
    return terms, bits


AGE_MACRO = """
CREATE OR REPLACE TEMP MACRO pp_short(b, w) AS
  day(w) < least(day(b), day(last_day(w)));
CREATE OR REPLACE TEMP MACRO pp_m(b, w) AS
  (year(w) - year(b)) * 12 + month(w) - month(b) - pp_short(b, w)::INTEGER;
CREATE OR REPLACE TEMP MACRO pp_d(b, w) AS
  CASE WHEN pp_short(b, w)
       THEN day(w - day(w)::INTEGER) - least(day(b), day(w - day(w)::INTEGER)) + day(w)
       ELSE day(w) - least(day(b), day(last_day(w))) END;
CREATE OR REPLACE TEMP MACRO pp_fmt(m, d, mon) AS
  CASE WHEN m IS NULL OR m < 0 THEN NULL
       WHEN m = 0 AND mon THEN 'P0M'
       WHEN m = 0 AND d = 0 THEN 'P0D'
       ELSE 'P' || CASE WHEN m >= 12 THEN (m // 12)::VARCHAR || 'Y' ELSE '' END
                || CASE WHEN m % 12 > 0 THEN (m % 12)::VARCHAR || 'M' ELSE '' END
                || CASE WHEN mon OR d = 0 THEN '' ELSE d::VARCHAR || 'D' END END;
"""
"""`phenopackets_terms.age` in integer arithmetic: whole months are the calendar difference, one
less when the date's day is before the birth day clipped to the date's month's end (`pp_short`:
the birth date plus those months would pass the date); days are counted from the birth day
clipped in the date's month, or in the month before when short. A date before birth gives a
negative month count (no age). Months and days are computed once per date as columns
(`age_columns`), then formatted: a macro's arguments are expanded as text, so nesting the
calendar arithmetic in the formatting would compute it several times per age."""


def age_columns(birth: str, when: str, name: str) -> str:
    """Select-list columns `_m_<name>`, `_d_<name>`: whole months and days from birth."""
    return f"pp_m({birth}, {when}) AS _m_{name}, pp_d({birth}, {when}) AS _d_{name}"


def with_ages(source: str, *names: str) -> str:
    """`source` (a subquery with the columns of `age_columns`) with the ages as text, `_a_<name>`:
    formatted once in their own projection rather than inside the CASEs that build the JSON
    (about a quarter of the query's time when formatted there)."""
    ages = ", ".join(f"pp_fmt(_m_{n}, _d_{n}, _mon) AS _a_{n}" for n in names)
    return f"(SELECT *, {ages} FROM {source})"


def time_element(name: str) -> str:
    """A TimeElement (an age) from the column of `with_ages`; NULL when there is no age."""
    return f"""('{{"age":{{"iso8601duration":"' || _a_{name} || '"}}}}')"""


def create_lookups(con: duckdb.DuckDBPyConnection) -> None:
    """The temporary tables and macros the batch query uses (on this connection only)."""
    con.execute(AGE_MACRO)
    _table(con, "pp_morph", "code VARCHAR, label VARCHAR", morphology_labels().items())
    _table(con, "pp_topo", "code VARCHAR, label VARCHAR", topography_labels().items())
    ncit = [(m, b, i, lab) for (m, b), (i, lab) in ncit_for_icdo3().items()]
    _table(con, "pp_ncit", "morphology VARCHAR, behaviour INTEGER, id VARCHAR, label VARCHAR", ncit)


def _table(
    con: duckdb.DuckDBPyConnection, name: str, columns: str, rows: Iterable[tuple[Any, ...]]
) -> None:
    """A temporary table of `rows`, loaded from one Arrow table (a thousand single-row inserts
    cost a tenth of a second)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({columns})")
    data = list(rows)
    if data:
        incoming = pa.table({f"c{i}": list(col) for i, col in enumerate(zip(*data, strict=True))})
        con.register("_pp_incoming", incoming)
        try:
            con.execute(f"INSERT INTO {name} SELECT * FROM _pp_incoming")
        finally:
            con.unregister("_pp_incoming")


def meta_tails(ctx: Context) -> list[str]:
    """The end of a line for every set of prefixes (the list index is the bit mask):
    `,"metaData":{...}}` and the newline, the metaData made by the protobuf builder
    (json_format). Appended to the lines outside SQL (`ends`): it is half of a line's bytes,
    and copying it through DuckDB's concatenation cost a fifth of the query."""
    tails = []
    for mask in range(1 << len(PREFIXES)):
        used = {p for p in PREFIXES if mask & BIT[p]}
        doc = MessageToDict(meta_data(ctx, Terms(used=used)))
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        tails.append(f',"metaData":{text}}}\n')
    return tails


def _tumour_select() -> str:
    lat, lat_bit = fixed("tumour.laterality", "x.laterality")
    system = "coalesce(nullif(x.stage_system, ''), 'unspecified')"
    words = (
        f"CASE WHEN {system} <> 'unspecified' "
        f"THEN {local_label('tumour', 'stage_system', system)} ELSE '' END"
    )
    stage = term(
        local_id("tumour.stage", f"{system} || '.' || x.stage"),
        f"trim({words} || ' stage ' || x.stage, ' \t\n\r\x0b\x0c')",
    )
    hist = term(
        "'ICDO3:' || x.morphology || '/' || x.behaviour::INTEGER",
        "coalesce(mo.label, 'ICD-O-3 ' || x.morphology) || ' (' || x.morphology || '/' "
        "|| x.behaviour::INTEGER || ')'",
    )
    site = term("'ICDO3:' || x.topography", "coalesce(tp.label, 'ICD-O-3 ' || x.topography)")
    return f"""
    SELECT x.tumour_id, x.patient_id, x.diagnosis_date, p._birth, p._mon, x.stage, x.laterality,
           {age_columns("p._birth", "x.diagnosis_date", "dx")},
           {hist} AS _hist, {site} AS _site,
           CASE WHEN nc.id IS NULL THEN {hist} ELSE {term("nc.id", "nc.label")} END AS _dx,
           CASE WHEN nc.id IS NULL THEN {BIT["ICDO3"]} ELSE {BIT["NCIT"]} END AS _dx_bit,
           {system} AS _system, {stage} AS _stage, {lat} AS _lat,
           {BIT["ICDO3"]} | {lat_bit} | CASE WHEN {nz("x.stage")} THEN {BIT[LOCAL]} ELSE 0 END
             AS _bits
    FROM tumour x JOIN p USING (patient_id)
    LEFT JOIN pp_morph mo ON mo.code = x.morphology
    LEFT JOIN pp_topo tp ON tp.code = x.topography
    LEFT JOIN pp_ncit nc ON nc.morphology = x.morphology AND nc.behaviour = x.behaviour
    WHERE x.patient_id BETWEEN $2 AND $3"""


def _disease() -> str:
    return obj1(
        ("term", "_hist"),
        ("onset", time_element("dx")),
        ("diseaseStage", f"CASE WHEN {nz('stage')} THEN '[' || _stage || ']' END"),
        ("primarySite", "_site"),
        ("laterality", "_lat"),
    )


def _specimen() -> str:
    tissue, tissue_bit = fixed("specimen.type", "s.type")
    sampled = f"coalesce({tissue}, CASE WHEN s.type = 'tumour_tissue' THEN s._site END)"
    sampled_bit = f"(CASE WHEN {tissue_bit} > 0 THEN {tissue_bit} WHEN s.type = 'tumour_tissue' "
    sampled_bit += f"THEN {BIT['ICDO3']} ELSE 0 END)"
    has_type = nz("s.type")
    doc = obj1(
        ("id", "to_json(s.specimen_id)"),
        ("individualId", "to_json(s.patient_id)"),
        (
            "description",
            "to_json('available for research: ' || CASE WHEN s.available THEN 'yes' "
            "WHEN NOT s.available THEN 'no' END)",
        ),
        ("sampledTissue", f"CASE WHEN {has_type} THEN {sampled} END"),
        ("sampleType", f"CASE WHEN {has_type} THEN {local_term('specimen', 'type', 's.type')} END"),
        ("timeOfCollection", time_element("collected")),
        ("histologicalDiagnosis", "s._dx"),
    )
    specimens = f"""(SELECT s.*, t.patient_id, t._site, t._dx, t._dx_bit, t._mon,
                 {age_columns("t._birth", "s.collection_date", "collected")}
          FROM specimen s JOIN t USING (tumour_id) WHERE s.tumour_id BETWEEN $4 AND $5)"""
    bits = f"s._dx_bit | CASE WHEN {has_type} THEN {BIT[LOCAL]} | {sampled_bit} ELSE 0 END"
    return f"""
    SELECT s.patient_id, string_agg({doc}, ',' ORDER BY s.specimen_id) AS docs,
           bit_or({bits}) AS bits, count(*) AS n
    FROM {with_ages(specimens, "collected")} s
    GROUP BY s.patient_id"""


def _what() -> str:
    """The agent as a local term when given, else the treatment type (`_what` of the
    reference)."""
    agent = term(local_id("treatment.agent", "x.agent"), "x.agent")
    kind = local_term("treatment", "type", "x.type")
    return f"CASE WHEN {nz('x.agent')} THEN {agent} ELSE {kind} END"


def _treatment_head() -> str:
    """What a treatment's JSON owes to its type, agent and protocol alone, up to its times:
    `{"procedure":{"code":...` or `{"therapeuticRegimen":{"externalReference":...`. Made once per
    distinct (type, agent, protocol) of the batch (a handful) rather than once per row."""
    has_agent = nz("x.agent")
    reference = obj1(
        ("id", f"to_json({local_id('treatment.protocol', 'x.protocol')})"),
        (
            "description",
            f"to_json({local_label('treatment', 'type', 'x.type')} || ': ' || x.protocol "
            f"|| CASE WHEN {has_agent} THEN ' (' || x.agent || ')' ELSE '' END)",
        ),
    )
    kinds = ", ".join(lit(k) for k in sorted(PROCEDURES))
    return f"""
    SELECT x.type, x.agent, x.protocol, coalesce(x.type IN ({kinds}), false) AS _proc,
           CASE WHEN coalesce(x.type IN ({kinds}), false)
                THEN '{{"procedure":{{"code":' || {_what()}
                WHEN {nz("x.protocol")}
                THEN '{{"therapeuticRegimen":{{"externalReference":' || {reference}
                ELSE '{{"therapeuticRegimen":{{"ontologyClass":' || {_what()} END AS _head
    FROM (SELECT DISTINCT type, agent, protocol FROM xs) x"""


def _treatment() -> str:
    """A treatment's MedicalAction: its head (`_treatment_head`), then the members that vary
    by row (times, body site, status) in field order, then the target."""
    procedure = f"""concat(CASE WHEN x.type = 'surgery' THEN ',"bodySite":' || x._site END,
        ',"performed":' || {time_element("start")})"""
    regimen = f"""concat(',"startTime":' || {time_element("start")},
        ',"endTime":' || {time_element("end")},
        CASE WHEN x.end_date IS NOT NULL THEN ',"regimenStatus":"COMPLETED"'
             WHEN x.start_date IS NOT NULL THEN ',"regimenStatus":"STARTED"' END)"""
    doc = f"""concat(h._head, CASE WHEN h._proc THEN {procedure} ELSE {regimen} END,
        '}},"treatmentTarget":', x._hist, '}}')"""
    return f"""
    SELECT x.patient_id, string_agg({doc}, ',' ORDER BY x.treatment_id) AS docs,
           {BIT[LOCAL] | BIT["ICDO3"]} AS bits, count(*) AS n
    FROM {with_ages("xs", "start", "end")} x
    JOIN xh h ON h.type IS NOT DISTINCT FROM x.type AND h.agent IS NOT DISTINCT FROM x.agent
         AND h.protocol IS NOT DISTINCT FROM x.protocol
    GROUP BY x.patient_id"""


def _treatment_rows() -> str:
    """The batch's treatments with their tumour's terms and their ages in months and days."""
    return f"""
    SELECT x.*, t.patient_id, t._site, t._hist, t._mon,
           {age_columns("t._birth", "x.start_date", "start")},
           {age_columns("t._birth", "x.end_date", "end")}
    FROM treatment x JOIN t USING (tumour_id) WHERE x.tumour_id BETWEEN $4 AND $5"""


def _number() -> str:
    """The biomarker value as JSON (json_format's names for non-finite doubles); NULL for 0,
    which json_format leaves out as the default."""
    return (
        "CASE WHEN _num = 0 THEN NULL WHEN isnan(_num) THEN '\"NaN\"' "
        "WHEN isinf(_num) AND _num > 0 THEN '\"Infinity\"' "
        "WHEN isinf(_num) THEN '\"-Infinity\"' ELSE to_json(_num)::VARCHAR END"
    )


def _biomarker() -> str:
    unit = "coalesce(nullif(x.unit, ''), '1')"
    unit_term = (
        f"CASE WHEN x.unit = '%' THEN {const_term('UCUM:%', 'percent')} "
        f"ELSE {term(local_id('biomarker.unit', unit), unit)} END"
    )
    quantity = obj1(("unit", unit_term), ("value", _number()))
    value = (
        f"CASE WHEN _num IS NOT NULL THEN '{{\"quantity\":' || {quantity} || '}}' "
        "WHEN x.value IS NOT NULL THEN '{\"ontologyClass\":' || "
        f"{term(local_id('biomarker.value', 'x.value'), 'x.value')} || '}}' END"
    )
    doc = obj1(
        ("description", "to_json('tumour ' || x.tumour_id)"),
        ("assay", term(local_id("biomarker.marker", "x.marker"), "x.marker")),
        ("value", value),
        ("timeObserved", time_element("observed")),
    )
    biomarkers = f"""(SELECT x.*, TRY_CAST(x.value AS DOUBLE) AS _num, t.patient_id, t._mon,
                 {age_columns("t._birth", "x.date", "observed")}
          FROM biomarker x JOIN t USING (tumour_id) WHERE x.tumour_id BETWEEN $4 AND $5)"""
    bits = (
        f"{BIT[LOCAL]} | CASE WHEN _num IS NOT NULL AND x.unit = '%' THEN {BIT['UCUM']} ELSE 0 END"
    )
    return f"""
    SELECT x.patient_id,
           string_agg({doc}, ',' ORDER BY x.tumour_id, x.marker, x.date) AS docs,
           bit_or({bits}) AS bits, count(*) AS n
    FROM {with_ages(biomarkers, "observed")} x
    GROUP BY x.patient_id"""


def _subject() -> str:
    dead = "p.vital_status = 'dead'"
    last = "coalesce(p.death_date, p.last_contact_date)"
    survival = f"{last} - d.first_dx"
    vital = obj(
        ("status", case("p.vital_status", {"alive": "'\"ALIVE\"'", "dead": "'\"DECEASED\"'"})),
        ("timeOfDeath", f"CASE WHEN {dead} THEN {time_element('death')} END"),
        (
            "causeOfDeath",
            f"CASE WHEN {dead} AND {nz('p.cause_of_death')} "
            f"THEN {local_term('patient', 'cause_of_death', 'p.cause_of_death')} END",
        ),
        ("survivalTimeInDays", f"CASE WHEN {survival} > 0 THEN ({survival})::VARCHAR END"),
    )
    human, _ = fixed("individual.taxonomy", "'human'")
    return obj1(
        ("id", "to_json(p.patient_id)"),
        ("timeAtLastEncounter", time_element("last")),
        ("vitalStatus", vital),
        ("sex", case("p.sex", {"male": "'\"MALE\"'", "female": "'\"FEMALE\"'"})),
        ("taxonomy", human),
    )


def _patient_bits() -> str:
    cause = f"p.vital_status = 'dead' AND {nz('p.cause_of_death')}"
    return f"{BIT['NCBITaxon']} | CASE WHEN {cause} THEN {BIT[LOCAL]} ELSE 0 END"


def batch_query(key_table: str) -> str:
    """The query of one batch: one row per patient, in key order, with the document's line up
    to its metaData, the bit mask of the prefixes it uses (`meta_tails`) and its element
    counts. Parameters: the batch number in
    `key_table`, its first and last patient key, its tumours' first and last key; the ranges
    select nothing the join does not, but let DuckDB skip the row groups of other batches (zone
    maps) when rows are stored in key order, as ingest writes them, instead of reading every
    table whole for every batch."""
    last_seen = "coalesce(p.death_date, p.last_contact_date, d.first_dx)"
    patients = f"""(SELECT p.*, {age_columns("p._birth", "p.death_date", "death")},
                 {age_columns("p._birth", last_seen, "last")}
          FROM p LEFT JOIN d USING (patient_id))"""
    lists = [("measurements", "b"), ("biosamples", "s"), ("diseases", "d"), ("medicalActions", "x")]
    body = ", ".join(f"',\"{k}\":[' || {a}.docs || ']'" for k, a in lists)
    bits = " | ".join(f"coalesce({a}.bits, 0)" for _, a in lists)
    # one concat() for the whole line: a chain of || copies the growing line at every step
    doc = f"""concat('{{"id":', to_json(p.patient_id), ',"subject":', {_subject()}, {body})"""
    return f"""
    WITH p AS (
      SELECT x.*, x.birth_date AS _birth, coalesce(x.birth_date_precision = 'month', false) AS _mon
      FROM patient x JOIN {key_table} k USING (patient_id)
      WHERE k.b = $1 AND x.patient_id BETWEEN $2 AND $3),
    t AS MATERIALIZED ({_tumour_select()}),
    d AS (SELECT patient_id, string_agg({_disease()}, ',' ORDER BY tumour_id) AS docs,
                 min(diagnosis_date) AS first_dx, bit_or(_bits) AS bits, count(*) AS n
          FROM {with_ages("t", "dx")} GROUP BY patient_id),
    s AS ({_specimen()}),
    xs AS MATERIALIZED ({_treatment_rows()}),
    xh AS ({_treatment_head()}),
    x AS ({_treatment()}),
    b AS ({_biomarker()})
    SELECT {doc} AS line, ({_patient_bits()}) | {bits} AS mask, coalesce(d.n, 0) AS diseases,
           coalesce(s.n, 0) AS biosamples, coalesce(x.n, 0) AS actions,
           coalesce(b.n, 0) AS measurements
    FROM {with_ages(patients, "death", "last")} p
    LEFT JOIN d USING (patient_id) LEFT JOIN s USING (patient_id)
    LEFT JOIN x USING (patient_id) LEFT JOIN b USING (patient_id)
    ORDER BY p.patient_id"""
