"""Children registered in two countries: diagnosed at home, then treated (and registered) abroad.

The copy keeps the child's birth date, sex and tumour, and the same course (the same relapse seen by
both registries), but the destination follows the child only while treated there.
"""

from __future__ import annotations

import numpy as np

from ccdp.synth.params import Params
from ccdp.synth.population import copy_routes
from ccdp.synth.simulate import Cohort


def add_cross_border(rng: np.random.Generator, params: Params, cohort: Cohort) -> None:
    """Append copies of a share of each origin country's cases to the destination country."""
    c = cohort.cases
    origins: list[np.ndarray] = []
    dests: list[np.ndarray] = []
    for i, (oi, di, share) in enumerate(copy_routes(params, cohort.countries)):
        pool = np.flatnonzero((c["country"] == oi) & (c["origin"] == np.arange(cohort.n)))
        if cohort.copies is None:  # each case copied with the route's probability
            pick = pool[rng.random(len(pool)) < share]
        else:  # exactly the number the total asks for (--patients N)
            pick = np.sort(rng.choice(pool, size=min(cohort.copies[i], len(pool)), replace=False))
        origins.append(pick)
        dests.append(np.full(len(pick), di, dtype=np.int16))
    if not origins or sum(len(o) for o in origins) == 0:
        return
    src = np.concatenate(origins)
    copy = cohort.take(src)
    k = len(src)
    copy["country"] = np.concatenate(dests)
    # followed abroad for 0.5-3 years, then back home; no trial enrolment abroad
    copy["t_ltfu"] = np.minimum(copy["t_ltfu"], rng.uniform(0.5, 3.0, k))
    copy["abandoned"] = np.zeros(k, dtype=bool)
    copy["trial"] = np.full(k, -1, dtype=np.int16)
    copy["arm"] = np.full(k, -1, dtype=np.int8)
    copy["enrol_day"] = np.full(k, -1, dtype=np.int64)
    copy["origin"] = src
    base = cohort.n
    for key in c:
        c[key] = np.concatenate([c[key], copy[key]])
    cohort.duplicates = [(int(o), base + i) for i, o in enumerate(src)]
