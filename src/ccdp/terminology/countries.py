"""ISO 3166-1 alpha-2 country codes, names and World Bank income groups.

Nodes are registered by country; the income group lets analyses and the synthetic registries
contrast high-income with low- and middle-income settings, where childhood cancer survival differs
most.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ccdp.terminology.datafiles import data_path

if TYPE_CHECKING:
    import pandas as pd

INCOME_GROUPS: tuple[str, ...] = ("high", "upper-middle", "lower-middle", "low")


@cache
def countries() -> pd.DataFrame:
    """Columns code (`DE`), name, income_group (one of INCOME_GROUPS, or NA if not classified)."""
    import pandas as pd

    with data_path("countries.csv").open(encoding="utf-8") as fh:
        # keep_default_na=False: "NA" is Namibia, not a missing value.
        table = pd.read_csv(fh, comment="#", dtype=str, keep_default_na=False)
    table["income_group"] = table["income_group"].replace("", pd.NA)
    return table


def valid_country(codes: Any) -> np.ndarray:
    """True where the value is an ISO 3166-1 alpha-2 code (upper case, as stored)."""
    import pandas as pd

    values = pd.Series(np.atleast_1d(np.asarray(codes, dtype=object)))
    return values.isin(set(countries()["code"])).to_numpy(dtype=bool)


def country_name(codes: Any) -> pd.Series:
    """English short name of each code; NaN where unknown."""
    import pandas as pd

    table = countries().set_index("code")["name"]
    return pd.Series(np.atleast_1d(np.asarray(codes, dtype=object))).map(table)


def income_group(codes: Any) -> pd.Series:
    """World Bank income group of each code; NA where unknown or not classified."""
    import pandas as pd

    table = countries().set_index("code")["income_group"]
    return pd.Series(np.atleast_1d(np.asarray(codes, dtype=object))).map(table)


def countries_in(group: str) -> list[str]:
    """Codes of the economies in one income group."""
    if group not in INCOME_GROUPS:
        raise ValueError(f"income group '{group}': not one of {', '.join(INCOME_GROUPS)}")
    table = countries()
    return table.loc[table["income_group"] == group, "code"].tolist()
