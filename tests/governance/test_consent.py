"""Consent (DUO) at the node: the matcher from DUO's definitions and DUOS-style match cases, then
real stores answering projects with exactly the patients their consent permits."""

from __future__ import annotations

import json

import duckdb
import pytest

from ccdp.disclosure.policy import load_policy, set_policy_value
from ccdp.federation.inprocess import InProcessTransport
from ccdp.federation.study import run_study
from ccdp.governance.consent import Consent, consent_filter, permits
from ccdp.terminology.mondo import disease_ancestors, is_a, mondo_diseases
from ccdp.wire.data_use import DataUse
from tests.storekit import build_store, random_registry

CANCER, LEUKAEMIA, ALL, NEUROBLASTOMA = (
    "MONDO:0004992",
    "MONDO:0005059",
    "MONDO:0004967",
    "MONDO:0005072",
)
GRU, HMB, DS, NPU, IRB = "DUO:0000042", "DUO:0000006", "DUO:0000007", "DUO:0000045", "DUO:0000021"


def use(permission: str, disease: str | None = None, **kw: object) -> DataUse:
    return DataUse.model_validate({"permission": permission, "disease": disease, **kw})


# (consent, data use, permitted): DUO's definitions, in the form of DUOS's match cases
CASES = [
    # permissions nest GRU ⊃ HMB ⊃ DS
    ("GRU", use("GRU"), True),
    ("GRU", use("HMB"), True),
    ("GRU", use("DS", LEUKAEMIA), True),
    ("HMB", use("GRU"), False),
    ("HMB", use("HMB"), True),
    ("HMB", use("DS", NEUROBLASTOMA), True),
    (f"DS {CANCER}", use("HMB"), False),
    (f"DS {CANCER}", use("GRU"), False),
    # DS-X permits DS on X or a subclass of X only
    (f"DS {CANCER}", use("DS", LEUKAEMIA), True),
    (f"DS {CANCER}", use("DS", ALL), True),
    (f"DS {LEUKAEMIA}", use("DS", ALL), True),
    (f"DS {LEUKAEMIA}", use("DS", LEUKAEMIA), True),
    (f"DS {LEUKAEMIA}", use("DS", NEUROBLASTOMA), False),
    (f"DS {LEUKAEMIA}", use("DS", CANCER), False),  # a superclass is broader than consented
    (f"DS {ALL}", use("DS", LEUKAEMIA), False),
    ("DS", use("DS", LEUKAEMIA), False),  # DS naming no disease: cannot be checked
    (f"DS {LEUKAEMIA} DS {NEUROBLASTOMA}", use("DS", NEUROBLASTOMA), True),
    ("DUO:0000007 MONDO:9999999", use("DS", "MONDO:9999999"), True),  # unlisted: itself
    ("DUO:0000007 MONDO:9999999", use("DS", LEUKAEMIA), False),
    # NRES permits everything; POA none of our uses
    ("NRES", use("GRU", commercial=True), True),
    ("POA", use("HMB"), False),
    # NPU / NCU / NPUNCU exclude commercial use, nothing else
    ("GRU NPU", use("HMB"), True),
    ("GRU NPU", use("HMB", commercial=True), False),
    ("GRU NCU", use("GRU", commercial=True), False),
    ("HMB NPUNCU", use("HMB", commercial=True), False),
    ("GRU", use("GRU", commercial=True), True),
    # requirement modifiers: permitted only when the project declares them met
    ("GRU IRB", use("HMB"), False),
    ("GRU IRB", use("HMB", meets=["IRB"]), True),
    ("HMB COL PUB", use("HMB", meets=["COL"]), False),
    ("HMB COL PUB", use("HMB", meets=["COL", "PUB"]), True),
    *[(f"GRU {m}", use("GRU"), False) for m in ("GS", "MOR", "RTN", "US", "IS", "PS")],
    *[(f"GRU {m}", use("GRU", meets=[m]), True) for m in ("GS", "MOR", "RTN", "US", "IS", "PS")],
    # GSO: genetic studies only; NMDS/NPOA/CC do not restrict a GRU/HMB/DS research use
    ("GRU GSO", use("HMB"), False),
    ("GRU NMDS NPOA CC", use("HMB"), True),
    # not valid DUO permits nothing
    ("GRU MONDO:0004992", use("GRU"), False),
    ("banana", use("GRU"), False),
]


@pytest.mark.parametrize(("consent", "data_use", "expected"), CASES)
def test_duo_semantics(consent, data_use, expected):
    assert permits(consent, data_use) is expected
    assert permits(consent, data_use, "statutory") is expected  # codes restrict either way


def test_reasons_name_the_rule():
    assert "HMB use" in Consent.parse(f"DS {CANCER}").why_not(use("HMB"))
    assert "NPU/NCU" in Consent.parse("GRU NPU").why_not(use("GRU", commercial=True))
    assert "IRB" in Consent.parse("GRU IRB PUB").why_not(use("GRU", meets=["PUB"]))


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_no_consent_depends_on_policy(empty):
    assert permits(empty, use("DS", LEUKAEMIA), "required") is False
    assert permits(empty, use("DS", LEUKAEMIA), "statutory") is True


def test_disease_hierarchy_is_data():
    table = mondo_diseases()
    assert table["id"].is_unique and set(table["parent"]) - {""} <= set(table["id"])
    assert disease_ancestors(ALL) == (ALL, LEUKAEMIA, CANCER)
    assert is_a(NEUROBLASTOMA, CANCER) and not is_a(NEUROBLASTOMA, LEUKAEMIA)
    assert set(table["checked"]) <= {"yes", "unsure"}


def test_sql_filter_is_decided_per_distinct_string():
    where, params = consent_filter(["GRU", None, "HMB", "GRU"], use("HMB"), "required")
    assert where == '("consent" IN (?, ?))' and params == ["GRU", "HMB"]
    where, _ = consent_filter([None], use("HMB"), "statutory")
    assert where == '("consent" IS NULL)'
    assert consent_filter([f"DS {CANCER}"], use("GRU"), "required") == ("FALSE", [])


def test_data_use_refuses_unknown_requirement():
    with pytest.raises(ValueError, match="meets"):
        use("GRU", meets=["XYZ"])


# -- a real store ---------------------------------------------------------------------------
PER_CLASS = 12
STORE_CONSENTS = {
    "gru": GRU,
    "hmb": HMB,
    "ds_cancer": f"{DS} {CANCER}",
    "ds_leukaemia": f"{DS} {LEUKAEMIA}",
    "npu": f"{GRU} {NPU}",
    "none_null": None,
    "none_blank": "",
}


@pytest.fixture
def store(tmp_path):
    rows = random_registry(7, PER_CLASS * len(STORE_CONSENTS), "FR", "c")
    consents = [c for c in STORE_CONSENTS.values() for _ in range(PER_CLASS)]
    for patient, consent in zip(rows["patient"], consents, strict=True):
        patient["consent"] = consent
    return build_store(tmp_path / "fr.duckdb", rows)


def direct_count(store, where: str) -> int:
    """The oracle: patients counted straight from the store's patient table."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM patient WHERE {where}").fetchone()[0]
    finally:
        con.close()


NONE = "(consent IS NULL OR trim(consent) = '')"
PROJECTS = {
    "hmb": (
        {"permission": "HMB"},
        f"consent IN ('{GRU}', '{HMB}', '{GRU} {NPU}')",
    ),
    "ds_leukaemia": (
        {"permission": "DS", "disease": LEUKAEMIA},
        f"consent IN ('{GRU}', '{HMB}', '{DS} {CANCER}', '{DS} {LEUKAEMIA}', '{GRU} {NPU}')",
    ),
    "ds_neuroblastoma": (
        {"permission": "DS", "disease": NEUROBLASTOMA},
        f"consent IN ('{GRU}', '{HMB}', '{DS} {CANCER}', '{GRU} {NPU}')",
    ),
    "commercial": ({"permission": "GRU", "commercial": True}, f"consent = '{GRU}'"),
}


@pytest.mark.parametrize("mode", ["required", "statutory"])
@pytest.mark.parametrize("project", list(PROJECTS))
def test_store_answers_with_exactly_the_consented_patients(store, project, mode):
    data_use, allowed = PROJECTS[project]
    if mode == "statutory":
        set_policy_value(store, "consent", "statutory")
        allowed = f"({allowed}) OR {NONE}"
    expected = direct_count(store, allowed)
    everyone = direct_count(store, "TRUE")
    result = run_study(
        {"analysis": "count", "by": ["sex"], "data_use": data_use}, InProcessTransport([store])
    )
    assert result.nodes["fr"].status == "answered"
    assert result.result.total == expected
    reason = result.nodes["fr"].reason or ""
    assert f"excluded by their consent (DUO): {everyone - expected}" in reason
    # without a data use, the same store answers with everyone
    plain = run_study({"analysis": "count", "by": ["sex"]}, InProcessTransport([store]))
    assert plain.result.total == everyone and "consent" not in (plain.nodes["fr"].reason or "")


def test_km_reads_the_same_consented_cohort(store):
    """The restriction is on the cohort's rows, so every analysis sees it, not only counts."""
    data_use, allowed = PROJECTS["ds_neuroblastoma"]
    result = run_study(
        {"analysis": "km", "outcome": "os", "data_use": data_use}, InProcessTransport([store])
    )
    assert result.nodes["fr"].status == "answered"
    frame = result.to_frame(steps=True)
    assert int(frame["at_risk"].max()) == direct_count(store, allowed)


def test_policy_switch_is_a_policy_key(store, ccdp):
    ccdp("node", "policy", "set", "consent", "statutory", "--store", store)
    assert load_policy(store).consent == "statutory"
    bad = ccdp("node", "policy", "set", "consent", "sometimes", "--store", store, check=False)
    assert bad.returncode != 0 and "consent" in bad.stderr + bad.stdout


def test_ccdp_run_honours_data_use_in_spec(store, tmp_path, ccdp):
    spec = tmp_path / "study.yaml"
    spec.write_text(
        "title: leukaemia project, checked locally\n"
        "analysis: count\nby: [sex]\n"
        f'data_use: {{permission: DS, disease: "{LEUKAEMIA}", commercial: false}}\n'
    )
    out = json.loads(ccdp("run", spec, "--store", store, "--json").stdout)
    assert out["result"]["total"] == direct_count(store, PROJECTS["ds_leukaemia"][1])
    bad = tmp_path / "bad.yaml"
    bad.write_text("analysis: count\ndata_use: {permission: DS}\n")
    proc = ccdp("run", bad, "--store", store, check=False)
    assert proc.returncode != 0 and "data_use" in proc.stderr + proc.stdout


def test_specimen_counts_keep_only_consented_childrens_samples(tmp_path):
    """A specimen study under a data use counts only the consented children's samples, also
    when its cohort filters on a specimen variable (the excluded children are counted on the
    same specimen rows)."""
    from tests.storekit import add_specimens, specimen_truth

    rows = random_registry(7, PER_CLASS * len(STORE_CONSENTS), "FR", "c")
    consents = [c for c in STORE_CONSENTS.values() for _ in range(PER_CLASS)]
    for patient, consent in zip(rows["patient"], consents, strict=True):
        patient["consent"] = consent
    store = build_store(tmp_path / "fr.duckdb", add_specimens(rows, seed=8))
    data_use, allowed = PROJECTS["hmb"]
    cohort = {"specimen_type": ["bone_marrow", "peripheral_blood"]}
    result = run_study(
        {"analysis": "count", "unit": "specimens", "cohort": cohort, "data_use": data_use},
        InProcessTransport([store]),
    )
    assert result.nodes["fr"].status == "answered", result.nodes["fr"].reason
    kinds = "s.type IN ('bone_marrow', 'peripheral_blood')"
    expected = specimen_truth(store, [], f"{kinds} AND ({allowed.replace('consent', 'p.consent')})")
    assert result.result.total == int(expected["n"].iloc[0])
    everyone = specimen_truth(store, [], kinds)
    assert result.result.total < int(everyone["n"].iloc[0])
    assert "excluded by their consent (DUO)" in (result.nodes["fr"].reason or "")
