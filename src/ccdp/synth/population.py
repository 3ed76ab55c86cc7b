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


def largest_remainder(total: int, weights: np.ndarray | list[float]) -> np.ndarray:
    """`total` split in proportion to `weights` in whole numbers summing to `total` exactly
    (Hamilton's method: the floors, then one more to the largest remainders, ties by order)."""
    w = np.asarray(weights, dtype=float)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(w.shape, dtype=np.int64)
    quota = total * w / w.sum()
    out = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return out


def copy_routes(params: Params, countries: list[str]) -> list[tuple[int, int, float]]:
    """(origin, destination, share) of the cross-border routes between the drawn countries,
    in the order of cross_border.csv (indices into `countries`)."""
    return [
        (countries.index(r.origin), countries.index(r.destination), float(r.share))
        for r in params.cross_border.itertuples(index=False)
        if r.origin in countries and r.destination in countries
    ]


def exact_split(
    patients: int, by_country: np.ndarray, routes: list[tuple[int, int, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """(registrations per country, cross-border copies per route) adding up to `patients`
    exactly: the copies are a share of their origin's cases, so the first registrations are
    patients / (1 + expected copy fraction), split over countries by their expected cases."""
    share = by_country / by_country.sum()
    fraction = sum(s * share[o] for o, _, s in routes)
    first = max(1, min(patients, round(patients / (1.0 + fraction))))
    totals = largest_remainder(first, share)
    weights = [s * totals[o] for o, _, s in routes]
    if patients > first and sum(weights) <= 0:  # no origin case to copy: all first records
        totals = largest_remainder(patients, share)
        weights = [0.0 for _ in routes]
    copies = largest_remainder(patients - int(totals.sum()), weights)
    return totals, np.minimum(copies, [totals[o] for o, _, _ in routes]).astype(np.int64)


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
    return _expand(rng.poisson(expected))


def draw_exact_cases(
    rng: np.random.Generator, expected: np.ndarray, totals: np.ndarray
) -> dict[str, np.ndarray]:
    """Exactly totals[c] cases in country c, spread over its cells by a multinomial draw with
    the expected counts as weights (Poisson counts conditioned on their sum), as rows."""
    counts = np.zeros(expected.shape, dtype=np.int64)
    for c, n in enumerate(totals):
        p = expected[c].ravel()
        counts[c] = rng.multinomial(int(n), p / p.sum()).reshape(expected[c].shape)
    return _expand(counts)


def _expand(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Counts per cell [country, year, sex, age, group] as one row per case."""
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
