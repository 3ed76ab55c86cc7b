"""Populations at risk and incident cases: Poisson counts from rates x person-years."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccdp.synth.params import AGE_GROUPS, ICCC_GROUPS, SEXES, Params


def population_array(params: Params, countries: list[str], years: list[int]) -> np.ndarray:
    """Mid-year population [country, year, sex, age] from each country's 2010 base and growth."""
    out = np.zeros((len(countries), len(years), len(SEXES), len(AGE_GROUPS)))
    yrs = np.asarray(years, dtype=float)
    share_cols = ["share_0", "share_1_4", "share_5_9", "share_10_14", "share_15_19"]
    for ci, code in enumerate(countries):
        c = params.country(code)
        shares = np.array([c[s] for s in share_cols], dtype=float)
        shares = shares / shares.sum()
        total = (
            float(c.pop_0_19_2010_millions)
            * 1e6
            * (1.0 + float(c.growth_per_year)) ** (yrs - 2010.0)
        )
        sex = np.array([c.male_share, 1.0 - c.male_share])
        out[ci] = total[:, None, None] * sex[None, :, None] * shares[None, None, :]
    return out


def sex_specific_rates(params: Params, male_share: float) -> np.ndarray:
    """Rates per person-year [sex, group, age] whose sex-weighted mean is the published rate."""
    rate, mf = params.rate_array()
    female = rate / (male_share * mf + (1.0 - male_share))
    return np.stack([mf * female, female]) / 1e6


def expected_cases(params: Params, countries: list[str], pop: np.ndarray) -> np.ndarray:
    """Expected counts [country, year, sex, age, group]."""
    out = np.zeros((*pop.shape, len(ICCC_GROUPS)))
    for ci, code in enumerate(countries):
        r = sex_specific_rates(params, float(params.country(code).male_share))  # [sex, g, a]
        out[ci] = pop[ci][:, :, :, None] * np.transpose(r, (0, 2, 1))[None, :, :, :]
    return out


def scale_to_patients(expected: np.ndarray, pop: np.ndarray, patients: int | None) -> float:
    """Factor applied to every population so the expected total number of cases is `patients`."""
    if patients is None:
        return 1.0
    return float(patients) / float(expected.sum())


def population_frame(pop: np.ndarray, countries: list[str], years: list[int]) -> pd.DataFrame:
    """Long table in the data model's `population` layout."""
    c, y, s, a = np.meshgrid(
        np.arange(len(countries)),
        np.arange(len(years)),
        np.arange(len(SEXES)),
        np.arange(len(AGE_GROUPS)),
        indexing="ij",
    )
    return pd.DataFrame(
        {
            "country": np.asarray(countries)[c.ravel()],
            "year": np.asarray(years)[y.ravel()],
            "sex": np.asarray(SEXES)[s.ravel()],
            "age_group": np.asarray(AGE_GROUPS)[a.ravel()],
            "population": pop.ravel(),
        }
    )


def draw_cases(rng: np.random.Generator, expected: np.ndarray) -> dict[str, np.ndarray]:
    """Poisson counts per cell, expanded to one row per case with its cell's coordinates."""
    counts = rng.poisson(expected)
    flat = counts.ravel()
    cell = np.repeat(np.arange(flat.size), flat)
    c, y, s, a, g = np.unravel_index(cell, counts.shape)
    return {
        "country": c.astype(np.int16),
        "year_idx": y.astype(np.int16),
        "sex": s.astype(np.int8),
        "age_idx": a.astype(np.int8),
        "group": g.astype(np.int8),
    }
