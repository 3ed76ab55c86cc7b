"""The very rare tumours' true rates in a synthetic draw, for truth.json.

VRT cases are not drawn on their own: they are the case-mix rows (casemix.csv) that the VRT rules
(ccdp.cohort.derived.vrt) classify as an entity, within their ICCC group's rate. Their expected rate
follows from the group rates, the case-mix weights by year of age and sex, and the populations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ccdp.cohort.derived.vrt import classify, entity_ids
from ccdp.synth.params import AGE_BOUNDS, AGE_GROUPS, Params
from ccdp.synth.population import expected_cases
from ccdp.synth.simulate import casemix_weights
from ccdp.terminology.populations import AGE_RANGES


def casemix_entities(params: Params) -> list[str | None]:
    """The VRT entity of each case-mix row (None: not a VRT)."""
    cm = params.casemix
    return [
        classify(str(m), str(t), int(b))
        for m, t, b in zip(cm.morphology, cm.topography, cm.behaviour, strict=True)
    ]


def _age_shares(params: Params) -> np.ndarray:
    """Share of each case-mix row among its group's cases [group, sex, age group, row]: the
    mean over the group's years of age (ages are uniform within an age group)."""
    w = casemix_weights(params)  # [group, sex, year, row]
    total = w.sum(axis=3, keepdims=True)
    share = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    return np.stack([share[:, :, lo:hi].mean(axis=2) for lo, hi in AGE_BOUNDS], axis=2)


def vrt_truth(params: Params, countries: list[str], population: np.ndarray) -> dict[str, Any]:
    """Expected cases and rates per million person-years of each VRT entity, for ages 0-14 and
    0-19, per country and pooled over the draw's countries."""
    cases = expected_cases(params, countries, population)  # [country, year, sex, age, group]
    share = _age_shares(params)  # [group, sex, age, row]
    rows = np.asarray([e or "" for e in casemix_entities(params)])
    by_row = np.einsum("cysag,gsar->cyar", cases, share)  # [country, year, age, row]
    pop = population.sum(axis=(1, 2))  # [country, age]
    out: dict[str, Any] = {}
    for entity in entity_ids():
        expected = by_row[..., rows == entity].sum(axis=(1, 3))  # [country, age]
        out[entity] = {}
        for ages, groups in AGE_RANGES.items():
            idx = [AGE_GROUPS.index(a) for a in groups]
            e_c, p_c = expected[:, idx].sum(axis=1), pop[:, idx].sum(axis=1)
            out[entity][ages] = {
                "expected_cases": round(float(e_c.sum()), 4),
                "rate_per_million": round(float(e_c.sum() / p_c.sum() * 1e6), 6),
                "by_country": {
                    c: round(float(e_c[i] / p_c[i] * 1e6), 6) for i, c in enumerate(countries)
                },
            }
    return out
