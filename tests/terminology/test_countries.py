"""ISO 3166-1 country codes and World Bank income groups."""

from __future__ import annotations

import pandas as pd

from ccdp.terminology import countries


def test_all_iso_alpha2_codes_are_there_once():
    table = countries.countries()
    assert len(table) == 249 and table["code"].is_unique
    assert table["code"].str.fullmatch(r"[A-Z]{2}").all()
    # "NA" (Namibia) must not be read as a missing value
    assert countries.country_name(["NA", "DE", "BR"]).tolist() == ["Namibia", "Germany", "Brazil"]


def test_income_groups():
    groups = countries.income_group(["DE", "BR", "IN", "MW", "AQ"]).tolist()
    assert groups[:4] == ["high", "upper-middle", "lower-middle", "low"]
    assert pd.isna(groups[4])
    assert set(countries.countries()["income_group"].dropna()) == set(countries.INCOME_GROUPS)
    assert "MW" in countries.countries_in("low") and "US" in countries.countries_in("high")


def test_valid_country():
    assert countries.valid_country(["DE", "de", "XX", "UK", None]).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
