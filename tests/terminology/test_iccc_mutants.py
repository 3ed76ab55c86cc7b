"""The ICCC code table is text throughout (found by the mutation run, docs/testing.md): a field
ICCC leaves blank, such as the division of a category without divisions, is the empty string,
never a missing value that callers would print as "nan" (the catalogue, the feasibility page and
the cohort view read the table's columns as strings)."""

from __future__ import annotations

import pytest

from ccdp.terminology.iccc import iccc_codes


@pytest.mark.parametrize("edition", ["2017", "who2008"])
def test_every_field_of_the_code_table_is_text(edition: str) -> None:
    codes = iccc_codes(edition)
    assert len(codes) > 0
    assert codes.map(lambda v: isinstance(v, str)).all().all()
    assert (codes["division"] == "").any()  # the premise: some divisions are blank
    assert (codes[["group", "subgroup", "extended", "recode", "label"]] != "").all().all()
