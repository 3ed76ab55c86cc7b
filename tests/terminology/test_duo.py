"""GA4GH DUO consent codes."""

from __future__ import annotations

import pytest

from ccdp.terminology import duo


def test_parse_consent_canonicalises_and_keeps_order():
    assert duo.parse_consent("DUO:0000042 DUO:0000018") == ["DUO:0000042", "DUO:0000018"]
    assert duo.parse_consent("duo_0000006, NPU;  IRB") == [
        "DUO:0000006",
        "DUO:0000045",
        "DUO:0000021",
    ]
    assert duo.parse_consent("GRU GRU") == ["DUO:0000042"]
    assert duo.parse_consent("") == [] and duo.parse_consent(None) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DUO:9999999", "consent 'DUO:9999999': not a GA4GH DUO term"),
        ("DUO:42", "consent 'DUO:42': not a GA4GH DUO term"),
        ("DUO:0000001", "is an abstract class"),
        ("DUO:0000018", "need a data use permission"),
    ],
)
def test_bad_consent_names_token_and_rule(text, message):
    with pytest.raises(duo.ConsentError, match=message):
        duo.parse_consent(text)
    assert not duo.valid_consent(text)


def test_hierarchy():
    assert duo.ancestors("DUO:0000007") == [
        "DUO:0000007",
        "DUO:0000006",
        "DUO:0000042",
        "DUO:0000001",
    ]
    assert "DUO:0000018" in duo.ancestors("DUO:0000046")
    assert duo.label("DUO:0000004") == "no restriction"
    terms = duo.duo_terms()
    assert terms["id"].is_unique and set(terms["parent"]) - {""} <= set(terms["id"])


def test_disease_follows_ds():
    """DS names its disease as the next token (MONDO); anywhere else it is refused."""
    assert duo.parse_consent("DS mondo_0004992 NPU") == [
        "DUO:0000007",
        "MONDO:0004992",
        "DUO:0000045",
    ]
    assert duo.parse_consent("DUO:0000007 MONDO:0004992") == ["DUO:0000007", "MONDO:0004992"]
    with pytest.raises(duo.ConsentError, match="'MONDO:0004992': a disease term follows only"):
        duo.parse_consent("DUO:0000042 MONDO:0004992")
    with pytest.raises(duo.ConsentError, match="follows only"):
        duo.parse_consent("MONDO:0004992")


def test_quality_accepts_ds_with_its_disease():
    """The data-quality edit on patient.consent reads the same parser: DS-X is valid."""
    from ccdp.quality.codes import invalid_codes

    assert invalid_codes("duo", ["DUO:0000007 MONDO:0004992"]) == {}
    assert (
        "follows only"
        in invalid_codes("duo", ["DUO:0000042 MONDO:0004992"])["DUO:0000042 MONDO:0004992"]
    )
