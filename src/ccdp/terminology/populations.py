"""Age groups and standard populations for childhood cancer incidence.

Children's registries report incidence in five-year bands with infants apart (0, 1-4, 5-9, 10-14,
15-19) and standardise to the Segi world population. The band labels come from the data model
(`population.age_group`) so that every stage uses the same strings.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from ccdp.errors import CcdpError
from ccdp.model import load_model
from ccdp.terminology.datafiles import data_path

AGE_RANGES: dict[str, tuple[str, ...]] = {
    "0-14": ("0", "1-4", "5-9", "10-14"),
    "0-19": ("0", "1-4", "5-9", "10-14", "15-19"),
}
_LOWER_BOUNDS = np.array([0, 1, 5, 10, 15, 20], dtype=float)


class PopulationError(CcdpError):
    """An unknown standard population or age range was asked for."""


def age_group_labels() -> tuple[str, ...]:
    """The age-group labels allowed by the data model, youngest first."""
    allowed = load_model().table("population").field("age_group").allowed
    return tuple(str(a) for a in allowed or ())


def age_group(ages: Any) -> np.ndarray:
    """Completed years of age -> age-group label (`0`, `1-4`, `5-9`, `10-14`, `15-19`).

    Vectorised; ages that are missing, negative or 20 and over give None.
    """
    labels = np.array(age_group_labels(), dtype=object)
    if len(labels) != len(_LOWER_BOUNDS) - 1:
        raise PopulationError(
            f"data model age groups {list(labels)} do not match the bands "
            f"{_LOWER_BOUNDS.tolist()} of ccdp.terminology.populations"
        )
    a = pd.to_numeric(pd.Series(np.atleast_1d(np.asarray(ages, dtype=object))), errors="coerce")
    values = np.floor(a.to_numpy(dtype=float))
    idx = np.searchsorted(_LOWER_BOUNDS, values, side="right") - 1
    ok = ~np.isnan(values) & (values >= 0) & (values < _LOWER_BOUNDS[-1])
    out = np.full(len(values), None, dtype=object)
    out[ok] = labels[idx[ok]]
    return out


@cache
def standard_populations() -> pd.DataFrame:
    """All packaged standard populations: columns standard, age_group, population (per 100,000)."""
    with data_path("standard_populations.csv").open(encoding="utf-8") as fh:
        table = pd.read_csv(fh, comment="#", dtype={"age_group": str}, keep_default_na=False)
    return table


def standard_weights(name: str = "segi_world", ages: str = "0-14") -> pd.Series:
    """Weights (summing to 1) of a standard population over an age range, indexed by age group."""
    table = standard_populations()
    if name not in set(table["standard"]):
        known = ", ".join(sorted(set(table["standard"])))
        raise PopulationError(f"standard population '{name}': not one of {known}")
    if ages not in AGE_RANGES:
        raise PopulationError(f"age range '{ages}': not one of {', '.join(AGE_RANGES)}")
    pop = table[table["standard"] == name].set_index("age_group")["population"].astype(float)
    pop = pop.reindex(list(AGE_RANGES[ages]))
    weights = pop / pop.sum()
    weights.name = f"{name} {ages}"
    weights.index.name = "age_group"
    return weights
