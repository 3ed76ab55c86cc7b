"""The Studies and Governance pages in words (issue 23, items 7 and 8): result tables headed and
filled with labels (the CSV keeps machine names), figure descriptions in words, and the consent
line only when consent excluded someone (node notes, the board's refusals)."""

from __future__ import annotations

import numpy as np

from ccdp.disclosure.consent_note import CONSENT_NOTE
from ccdp.report.html import shown_refusals
from ccdp.web.plots import node_rows, result_figures, result_tables
from tests.analyses.federate import federate, split
from tests.analyses.test_labels import FORBIDDEN, arm_frame, survival_frame

ZERO = f"{CONSENT_NOTE}: 0"


def page_text(tables) -> str:
    return "\n".join(
        " ".join([t.title, t.caption, *t.header(), *(" ".join(r) for r in t.rows())])
        for t in tables
    )


def test_km_tables_and_figure_read_as_words_and_the_csv_keeps_names() -> None:
    rng = np.random.default_rng(1)
    frame = survival_frame(rng, 240, iccc_group=["I", "II", "III"])
    result = federate("km", {"by": ["iccc_group"]}, split(frame, 2, rng), min_cell=1)
    tables = result_tables(result)
    text = page_text(tables)
    assert not [t for t in FORBIDDEN if t in text]
    assert "Leukaemias (I)" in text and "95% CI lower" in text and "ICCC-3 main group" in text
    curves = next(t for t in tables if t.key == "curves")
    assert curves.csv().splitlines()[0] == "group,time,at_risk,events,survival,ci_low,ci_high"
    assert curves.csv().splitlines()[1].startswith("I,")
    (figure,) = result_figures(result, {})
    assert "Leukaemias (I)" in figure.alt and "Overall survival" in figure.alt
    assert not [t for t in FORBIDDEN if t in figure.alt]


def test_cox_tables_and_figure_read_as_words() -> None:
    rng = np.random.default_rng(2)
    result = federate(
        "cox", {"covariates": ["arm", "age_group"], "strata": "none"}, split(arm_frame(rng), 2, rng)
    )
    tables = result_tables(result)
    text = page_text(tables) + result_figures(result, {})[0].alt
    assert not [t for t in FORBIDDEN if t in text]
    summary = tables[0]
    terms = [row[0] for row in summary.rows()]
    assert terms == [
        "Arm: B-reduced-anthracycline",
        "Age group (years): 1-4",
        "Age group (years): 5-9",
        "Age group (years): 10-14",
        "Age group (years): 15-19",
    ]
    assert summary.header() == ["Term", "HR (95% CI)", "p"]


def record(reasons: dict[str, str | None]) -> dict:
    nodes = {n: {"status": "answered", "reason": r} for n, r in reasons.items()}
    return {"status": "done", "nodes": list(reasons), "result": {"nodes": nodes}}


def test_node_notes_show_the_consent_line_only_when_non_zero() -> None:
    rows = node_rows(record({"FR": ZERO, "DE": f"{CONSENT_NOTE}: 4", "KE": f"{ZERO}; x"}))
    assert [r["reason"] for r in rows] == [None, f"{CONSENT_NOTE}: 4", "x"]


def test_the_boards_list_leaves_out_answers_whose_only_note_is_a_zero_consent_line() -> None:
    studies = [
        {"study": "a", "nodes": [{"node": "FR", "status": "answered", "reason": ZERO}]},
        {
            "study": "b",
            "nodes": [
                {"node": "FR", "status": "answered", "reason": ZERO},
                {"node": "DE", "status": "refused", "reason": "too few"},
                {"node": "KE", "status": "answered", "reason": f"{CONSENT_NOTE}: 9"},
            ],
        },
    ]
    shown = shown_refusals(studies)
    assert [s["study"] for s in shown] == ["b"]  # study a says nothing
    assert [(n["node"], n["reason"]) for n in shown[0]["nodes"]] == [
        ("DE", "too few"),
        ("KE", f"{CONSENT_NOTE}: 9"),
    ]
