"""The model → OMOP CDM 5.4 mapping, one `INSERT … SELECT` per CDM table.

Each statement runs on the store's connection with the output database attached as `cdm`, so
the mapping is DuckDB's work, never a loop over patients. Ids are deterministic: a person's id
is the rank of its store key, every other id the rank of its own key, so the same store gives
the same rows with the same ids. `{name}` placeholders are the concept ids of
`omop_vocab.CONSTANTS`.
"""

from __future__ import annotations

DRUG_TYPES = ("chemotherapy", "immunotherapy", "targeted", "car_t")
"""Treatments written as drug_exposure; the others (surgery, radiotherapy, hsct, other) are
procedures."""

KEYS = [
    # the patient's own columns come along, so person, death and the observation period need
    # no second join on the text key
    """CREATE OR REPLACE TEMP TABLE _omop_person AS
    SELECT patient_id, CAST(row_number() OVER (ORDER BY patient_id) AS INTEGER) AS person_id,
           sex, birth_date, birth_date_precision, vital_status, last_contact_date, death_date,
           cause_of_death
    FROM patient""",
    """CREATE OR REPLACE TEMP TABLE _omop_tumour AS
    SELECT t.tumour_id, p.person_id, t.diagnosis_date, t.wbc_at_diagnosis, t.stage_system,
           t.stage, t.risk_group, t.cns_status, t.immunophenotype,
           CAST(row_number() OVER (ORDER BY t.tumour_id) AS INTEGER) AS tumour_no,
           t.morphology || '/' || CAST(t.behaviour AS VARCHAR) || '-' || t.topography AS code
    FROM tumour t JOIN _omop_person p USING (patient_id)""",
    # treatments with a start date (OMOP requires one), numbered once: a drug_exposure_id or
    # procedure_occurrence_id is the treatment's rank (unique in its table; gaps are allowed)
    f"""CREATE OR REPLACE TEMP TABLE _omop_treatment AS
    SELECT x.treatment_id, x.type, x.agent, x.protocol, x.start_date, x.end_date, o.person_id,
           o.tumour_no, x.type IN {DRUG_TYPES} AS is_drug,
           CAST(row_number() OVER (ORDER BY x.treatment_id) AS INTEGER) AS treatment_no
    FROM treatment x JOIN _omop_tumour o USING (tumour_id)
    WHERE x.start_date IS NOT NULL""",
    # relapse and progression events: the disease episodes after the first occurrence
    """CREATE OR REPLACE TEMP TABLE _omop_course AS
    SELECT e.event_id, e.tumour_id, e.event_type, e.event_date, e.relapse_site, o.person_id,
           o.tumour_no,
           CAST(row_number() OVER (ORDER BY e.event_id) AS INTEGER) AS course_no,
           CAST(row_number() OVER (PARTITION BY e.tumour_id ORDER BY e.event_date, e.event_id)
                AS INTEGER) AS course_number
    FROM event e JOIN _omop_tumour o USING (tumour_id)
    WHERE e.event_type IN ('relapse', 'progression')""",
]

MEASUREMENTS = """CREATE OR REPLACE TEMP VIEW _omop_measure AS
SELECT o.person_id,
       CAST(row_number() OVER (ORDER BY o.tumour_no, b.date, b.marker) AS INTEGER) AS id,
       b.date AS d, b.marker AS source_value, try_cast(b.value AS DOUBLE) AS num,
       b.value AS value_text, b.unit AS unit
FROM biomarker b JOIN _omop_tumour o USING (tumour_id) WHERE b.date IS NOT NULL
UNION ALL
SELECT person_id, {n_biomarkers} + tumour_no, diagnosis_date, 'WBC at diagnosis',
       wbc_at_diagnosis, CAST(wbc_at_diagnosis AS VARCHAR), '10^9/L'
FROM _omop_tumour WHERE wbc_at_diagnosis IS NOT NULL
UNION ALL
SELECT person_id, {n_biomarkers} + {n_tumours} + tumour_no, diagnosis_date,
       'stage ' || coalesce(stage_system, 'unspecified'), NULL, stage, NULL
FROM _omop_tumour WHERE stage IS NOT NULL
UNION ALL
SELECT person_id, {n_biomarkers} + 2 * {n_tumours} + tumour_no, diagnosis_date, 'risk group',
       NULL, risk_group, NULL
FROM _omop_tumour WHERE risk_group IS NOT NULL
UNION ALL
SELECT person_id, {n_biomarkers} + 3 * {n_tumours} + tumour_no, diagnosis_date, 'CNS status',
       NULL, cns_status, NULL
FROM _omop_tumour WHERE cns_status IS NOT NULL
UNION ALL
SELECT person_id, {n_biomarkers} + 4 * {n_tumours} + tumour_no, diagnosis_date,
       'immunophenotype', NULL, immunophenotype, NULL
FROM _omop_tumour WHERE immunophenotype IS NOT NULL
UNION ALL
SELECT person_id, measurement_id, event_date, 'bone marrow blasts', bm_blasts_pct,
       CAST(bm_blasts_pct AS VARCHAR), '%'
FROM _omop_blasts"""
"""Every measurement, its id computed without one global sort: biomarkers 1..B (ranked by
tumour, date, marker); the tumour's values at diagnosis B + (k - 1)·T + tumour rank for the k-th
of WBC, stage, risk group, CNS status, immunophenotype (gaps where a value is absent: OMOP ids
need only be unique); bone-marrow blasts at an event after them (`_omop_blasts`)."""

BLASTS = """CREATE OR REPLACE TEMP TABLE _omop_blasts AS
SELECT o.person_id, e.event_id, e.event_date, e.bm_blasts_pct,
       CAST({n_biomarkers} + 5 * {n_tumours}
            + row_number() OVER (ORDER BY o.tumour_no, e.event_date, e.event_id) AS INTEGER)
       AS measurement_id
FROM event e JOIN _omop_tumour o USING (tumour_id) WHERE e.bm_blasts_pct IS NOT NULL"""
"""Bone-marrow blasts at an event: kept with their measurement ids, which episode_event cites."""

TABLES: dict[str, str] = {
    "person": """INSERT INTO cdm.person
SELECT x.person_id,
       CASE x.sex WHEN 'male' THEN {male} WHEN 'female' THEN {female} ELSE 0 END,
       year(x.birth_date), month(x.birth_date),
       CASE WHEN x.birth_date_precision = 'month' THEN NULL ELSE day(x.birth_date) END,
       NULL, 0, 0, NULL, NULL, NULL,
       x.patient_id, x.sex, 0, NULL, NULL, NULL, NULL
FROM _omop_person x""",
    "condition_occurrence": """INSERT INTO cdm.condition_occurrence
SELECT o.tumour_no, o.person_id, coalesce(m.concept_id, 0), o.diagnosis_date, NULL, NULL, NULL,
       {registry}, NULL, NULL, NULL, NULL, NULL, o.code, coalesce(m.source_concept_id, 0), NULL
FROM _omop_tumour o LEFT JOIN _omop_condition m USING (code)""",
    "drug_exposure": """INSERT INTO cdm.drug_exposure
SELECT x.treatment_no, x.person_id, coalesce(d.concept_id, 0), x.start_date, NULL,
       coalesce(x.end_date, x.start_date), NULL, x.end_date, {registry},
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       left(coalesce(x.agent, x.type), 50), coalesce(d.concept_id, 0), NULL, NULL
FROM _omop_treatment x LEFT JOIN _omop_drug d ON d.name = lower(x.agent)
WHERE x.is_drug""",
    "procedure_occurrence": """INSERT INTO cdm.procedure_occurrence
SELECT x.treatment_no, x.person_id, 0, x.start_date, NULL, x.end_date, NULL, {registry},
       NULL, NULL, NULL, NULL, NULL,
       left(x.type || coalesce(': ' || x.agent, ''), 50), 0, NULL
FROM _omop_treatment x WHERE NOT x.is_drug""",
    "measurement": """INSERT INTO cdm.measurement
SELECT m.id, m.person_id, 0, m.d, NULL, NULL, {registry}, NULL, m.num,
       CASE lower(m.value_text) WHEN 'positive' THEN nullif({positive}, 0)
            WHEN 'negative' THEN nullif({negative}, 0) END,
       CASE WHEN m.unit IS NOT NULL THEN coalesce(u.concept_id, 0) END, NULL, NULL,
       NULL, NULL, NULL, left(m.source_value, 50), 0, m.unit,
       CASE WHEN m.unit IS NOT NULL THEN coalesce(u.concept_id, 0) END,
       left(m.value_text, 50), NULL, NULL
FROM _omop_measure m LEFT JOIN _omop_unit u USING (unit)""",
    "specimen": """INSERT INTO cdm.specimen
SELECT CAST(row_number() OVER (ORDER BY s.specimen_id) AS INTEGER), o.person_id, 0, {registry},
       s.collection_date, NULL, NULL, NULL, NULL, NULL, s.specimen_id, s.type, NULL, NULL, NULL
FROM specimen s JOIN _omop_tumour o USING (tumour_id) WHERE s.collection_date IS NOT NULL""",
    "death": """INSERT INTO cdm.death
SELECT x.person_id, x.death_date, NULL, {registry}, 0, x.cause_of_death, 0
FROM _omop_person x WHERE x.vital_status = 'dead' AND x.death_date IS NOT NULL""",
    # episodes: ids 1..T first occurrences (= the tumour's rank), then relapses/progressions,
    # then treatment regimens; the object concept is 0 for disease episodes (see docs)
    "episode": """INSERT INTO cdm.episode
SELECT o.tumour_no, o.person_id, {first_occurrence}, o.diagnosis_date, NULL, NULL, NULL, NULL,
       1, 0, {registry}, o.code, 0
FROM _omop_tumour o
UNION ALL
SELECT {n_tumours} + c.course_no, c.person_id,
       CASE c.event_type WHEN 'relapse' THEN {recurrence} ELSE {progression} END,
       c.event_date, NULL, NULL, NULL, c.tumour_no, c.course_number, 0, {registry},
       left(c.event_type || coalesce(': ' || c.relapse_site, ''), 50), 0
FROM _omop_course c
UNION ALL
SELECT {n_tumours} + {n_courses} + x.treatment_no, x.person_id, {regimen}, x.start_date, NULL,
       x.end_date, NULL, NULL, NULL, 0, {registry},
       left(coalesce(x.protocol, x.agent, x.type), 50), 0
FROM _omop_treatment x""",
    "episode_event": """INSERT INTO cdm.episode_event
SELECT o.tumour_no, o.tumour_no, {field_condition} FROM _omop_tumour o
UNION ALL
SELECT {n_tumours} + c.course_no, m.measurement_id, {field_measurement}
FROM _omop_course c JOIN _omop_blasts m USING (event_id)
UNION ALL
SELECT {n_tumours} + {n_courses} + x.treatment_no, x.treatment_no,
       CASE WHEN x.is_drug THEN {field_drug} ELSE {field_procedure} END
FROM _omop_treatment x""",
    # last: from every date written above (integer person ids, no text key), so every record
    # lies inside its person's period by construction
    "observation_period": """INSERT INTO cdm.observation_period
SELECT x.person_id, x.person_id,
       coalesce(d.first, x.last_contact_date, x.birth_date),
       coalesce(greatest(d.last, x.last_contact_date), d.first, x.birth_date), {registry}
FROM _omop_person x
LEFT JOIN (
  SELECT person_id, min(first) AS first, max(last) AS last FROM (
    SELECT person_id, condition_start_date AS first, condition_start_date AS last
      FROM cdm.condition_occurrence
    UNION ALL SELECT person_id, drug_exposure_start_date, drug_exposure_end_date
      FROM cdm.drug_exposure
    UNION ALL SELECT person_id, procedure_date, coalesce(procedure_end_date, procedure_date)
      FROM cdm.procedure_occurrence
    UNION ALL SELECT person_id, measurement_date, measurement_date FROM cdm.measurement
    UNION ALL SELECT person_id, specimen_date, specimen_date FROM cdm.specimen
    UNION ALL SELECT person_id, death_date, death_date FROM cdm.death
    UNION ALL SELECT person_id, episode_start_date, coalesce(episode_end_date, episode_start_date)
      FROM cdm.episode
  ) GROUP BY person_id
) d USING (person_id)""",
}
"""CDM table → its INSERT, in the order they are written."""

LOST = {
    "treatments without a start date": "SELECT count(*) FROM treatment WHERE start_date IS NULL",
    "specimens without a collection date": (
        "SELECT count(*) FROM specimen WHERE collection_date IS NULL"
    ),
    "biomarkers without a date": "SELECT count(*) FROM biomarker WHERE date IS NULL",
    "deaths without a date": (
        "SELECT count(*) FROM patient WHERE vital_status = 'dead' AND death_date IS NULL"
    ),
}
"""Rows OMOP cannot hold (a required date is missing): counted, reported as warnings."""
