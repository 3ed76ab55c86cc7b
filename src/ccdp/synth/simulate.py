"""Draw the synthetic cohort: cases, tumour characteristics and the clinical course, as arrays.

One row per case (a patient with one primary tumour). All draws are vectorised over cases; the only
Python loops run over small domain tables (ICCC groups, profiles, trials). Times are in days since
1970-01-01 (dates) or in years from diagnosis (latent times); -1 / inf mean "none".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ccdp.synth.params import (
    AGE_BAND_COLUMN,
    AGE_BOUNDS,
    ICCC_GROUPS,
    INCOME_LEVELS,
    Params,
    SynthError,
)
from ccdp.synth.population import (
    copy_routes,
    draw_cases,
    draw_exact_cases,
    exact_split,
    expected_cases,
    population_array,
)

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = 30.4375
EPOCH = np.datetime64("1970-01-01", "D")
TIMING_CATEGORIES: tuple[str, ...] = ("very_early", "early", "late")
RELAPSE_SITES: tuple[str, ...] = ("bone_marrow", "cns", "testis", "combined")
CAUSES: tuple[str, ...] = ("cancer", "treatment_related", "other", "unknown")
CNS_STATUS: tuple[str, ...] = ("CNS1", "CNS2", "CNS3")


def day(date: str) -> int:
    """Days since 1970-01-01 of an ISO date."""
    return int((np.datetime64(date, "D") - EPOCH).astype(np.int64))


@dataclass
class Cohort:
    """The drawn cohort: per-case arrays plus the lookups needed to render them."""

    countries: list[str]
    years: list[int]
    cutoff_day: int
    scale: float
    population: np.ndarray
    cases: dict[str, np.ndarray]
    labels: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    identities: Any = None
    # cross-border copies per route (copy_routes order) when --patients fixes the total exactly
    copies: list[int] | None = None

    @property
    def n(self) -> int:
        return len(self.cases["dx"])

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in self.cases.items()}


def _choice(rng: np.random.Generator, n: int, probs: list[float] | np.ndarray) -> np.ndarray:
    """n draws of category indices with the given probabilities (vectorised inverse CDF)."""
    cdf = np.cumsum(np.asarray(probs, dtype=float))
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int16)


def draw_latent_time(
    u: np.ndarray, p: np.ndarray, hr: np.ndarray, grid: np.ndarray, shape: np.ndarray
) -> np.ndarray:
    """Latent event time (years) with cumulative incidence p*shape(t), under a hazard ratio hr.

    S(t) = 1 - p*G(t); arm B draws from S(t)^hr by the inverse transform S(T) = U^(1/hr), so the
    hazard is exactly hr times the baseline at every t. No event (inf) when U^(1/hr) < 1 - p.
    """
    s = u ** (1.0 / hr)
    f = 1.0 - s
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(p > 0, f / p, np.inf)
    out = np.full(u.shape, np.inf)
    hit = g <= 1.0
    out[hit] = np.interp(g[hit], shape, grid)
    return out


def _cases_from_population(
    rng: np.random.Generator,
    params: Params,
    countries: list[str],
    years: list[int],
    patients: int | None,
) -> tuple[np.ndarray, float, dict[str, np.ndarray], list[int] | None]:
    """Populations and cases: Poisson counts of the populations as they are, or, with
    `patients`, exactly that many registrations with their cross-border copies (the
    populations scaled so that the expected cases are the first registrations)."""
    pop = population_array(params, countries, years)
    expected = expected_cases(params, countries, pop)
    if patients is None:
        return pop, 1.0, draw_cases(rng, expected), None
    by_country = expected.sum(axis=tuple(range(1, expected.ndim)))
    totals, copies = exact_split(patients, by_country, copy_routes(params, countries))
    scale = float(totals.sum()) / float(expected.sum())
    pop = np.round(pop * scale)
    cases = draw_exact_cases(rng, expected_cases(params, countries, pop), totals)
    return pop, scale, cases, [int(k) for k in copies]


def _dates(rng: np.random.Generator, cases: dict[str, np.ndarray], years: list[int]) -> None:
    """Diagnosis date uniform in its year, age uniform in its age group, birth date from both."""
    n = len(cases["sex"])
    yr = np.asarray(years)[cases["year_idx"]]
    start = (yr - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    end = (yr - 1969).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    dx = start + np.floor(rng.random(n) * (end - start)).astype(np.int64)
    lo = np.array([int(np.ceil(a * DAYS_PER_YEAR)) + 1 for a, _ in AGE_BOUNDS])
    hi = np.array([int(np.floor(b * DAYS_PER_YEAR)) - 2 for _, b in AGE_BOUNDS])
    a = cases["age_idx"]
    age_days = lo[a] + np.floor(rng.random(n) * (hi[a] - lo[a])).astype(np.int64)
    cases["dx"] = dx
    cases["birth"] = dx - age_days
    cases["age_days"] = age_days


def completed_years(birth: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Age in completed calendar years at `when` (both in days since 1970-01-01)."""
    b = np.asarray(birth).astype("datetime64[D]")
    w = np.asarray(when).astype("datetime64[D]")
    by = b.astype("datetime64[Y]")
    wy = w.astype("datetime64[Y]")
    years = (wy - by).astype(np.int64)
    # compare (month, day), not day of year, which shifts in leap years
    bm = (b.astype("datetime64[M]") - by.astype("datetime64[M]")).astype(np.int64)
    wm = (w.astype("datetime64[M]") - wy.astype("datetime64[M]")).astype(np.int64)
    bd = (b - b.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64)
    wd = (w - w.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64)
    before = (wm < bm) | ((wm == bm) & (wd < bd))
    return years - before.astype(np.int64)


def _year_days(year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range of age in days [lo, hi) that is `year` completed years on any calendar."""
    lo = np.ceil(year * DAYS_PER_YEAR).astype(np.int64) + 1
    hi = np.floor((year + 1) * DAYS_PER_YEAR).astype(np.int64) - 2
    return lo, hi


def casemix_weights(params: Params) -> np.ndarray:
    """Weight of each case-mix row for [group, sex, completed year of age, row]."""
    cm = params.casemix
    w = np.zeros((len(ICCC_GROUPS), 2, 20, len(cm)))
    group = np.array([ICCC_GROUPS.index(g) for g in cm.iccc_group])
    for y in range(20):
        age_idx = next(i for i, (a, b) in enumerate(AGE_BOUNDS) if a <= y < b)
        col = cm[AGE_BAND_COLUMN[age_idx]].to_numpy(dtype=float)
        in_age = (cm.age_min.to_numpy() <= y) & (y <= cm.age_max.to_numpy())
        for si, sex in enumerate(("male", "female")):
            ok = in_age & cm.sex.isin(["any", sex]).to_numpy()
            w[group[ok], si, y, np.flatnonzero(ok)] = col[ok]
    return w


def _casemix(rng: np.random.Generator, params: Params, cases: dict[str, np.ndarray]) -> None:
    """Pick each case's ICD-O-3 coding row within its ICCC group, sex and year of age.

    Where a histology is implausible at some ages of the case's age group (retinoblastoma after 5),
    the age is redrawn within the group among the years that have a histology.
    """
    w = casemix_weights(params)
    n = len(cases["sex"])
    g, s, a = cases["group"].astype(np.int64), cases["sex"].astype(np.int64), cases["age_idx"]
    has = w.sum(axis=3) > 0  # [group, sex, year]
    years = completed_years(cases["birth"], cases["dx"])
    bad = ~has[g, s, years]
    if bad.any():
        for gi, si, ai in sorted(set(zip(g[bad], s[bad], a[bad], strict=True))):
            lo_y, hi_y = AGE_BOUNDS[ai]
            allowed = [y for y in range(lo_y, hi_y) if has[gi, si, y]]
            m = bad & (g == gi) & (s == si) & (a == ai)
            if not allowed:
                raise SynthError(
                    f"casemix.csv: no histology of group {ICCC_GROUPS[gi]} for "
                    f"{('boys', 'girls')[si]} aged {lo_y}-{hi_y - 1}, but its rate is not 0"
                )
            y = np.asarray(allowed)[rng.integers(0, len(allowed), int(m.sum()))]
            lo, hi = _year_days(y)
            days = lo + np.floor(rng.random(len(y)) * (hi - lo)).astype(np.int64)
            cases["age_days"][m] = days
            cases["birth"][m] = cases["dx"][m] - days
        years = completed_years(cases["birth"], cases["dx"])
    key = (g * 2 + s) * 20 + years
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    u = rng.random(n)
    row = np.full(n, -1, dtype=np.int32)
    for seg in np.split(order, bounds):
        if len(seg) == 0:
            continue
        k = int(key[seg[0]])
        weights = w[k // 40, (k // 20) % 2, k % 20]
        cdf = np.cumsum(weights) / weights.sum()
        row[seg] = np.searchsorted(cdf, u[seg], side="right")
    cases["cm_row"] = row
    profile_index = {p: i for i, p in enumerate(params.profile_names)}
    cm = params.casemix
    cases["profile"] = np.array([profile_index[p] for p in cm.profile])[row].astype(np.int16)


def _profile_array(params: Params, key: str, default: float = 0.0) -> np.ndarray:
    """A numeric profile parameter as an array indexed by profile number."""
    out = []
    for name in params.profile_names:
        v = params.profiles[name].get(key, default)
        out.append(float(v) if isinstance(v, int | float) and v is not None else default)
    return np.array(out)


def _strata(rng: np.random.Generator, params: Params, cases: dict[str, np.ndarray]) -> list[str]:
    """Stage (Toronto tier 2) or risk group per case, and the multiplier of its relapse risk."""
    n = len(cases["sex"])
    labels: list[str] = []
    stage = np.full(n, -1, dtype=np.int16)
    risk = np.full(n, -1, dtype=np.int16)
    mult = np.ones(n)
    for pi, name in enumerate(params.profile_names):
        prof = params.profiles[name]
        mask = cases["profile"] == pi
        k = int(mask.sum())
        for key, target in (("stage", stage), ("risk", risk)):
            spec = prof.get(key)
            if not spec or "values" not in spec or k == 0:
                continue
            idx = _choice(rng, k, spec["shares"])
            codes = np.array([_label(labels, f"{v}") for v in spec["values"]], dtype=np.int16)
            target[mask] = codes[idx]
            mult[mask] *= np.asarray(spec["multipliers"], dtype=float)[idx]
    cases["stage"] = stage
    cases["risk"] = risk
    cases["stratum_mult"] = mult
    return labels


def _label(labels: list[str], value: str) -> int:
    if value not in labels:
        labels.append(value)
    return labels.index(value)


def _leukaemia_features(
    rng: np.random.Generator, params: Params, cases: dict[str, np.ndarray], labels: list[str]
) -> None:
    """CNS status, WBC at diagnosis and immunophenotype for the profiles that have them."""
    n = len(cases["sex"])
    cm = params.casemix
    immuno = cm.immunophenotype.to_numpy()[cases["cm_row"]]
    cases["immuno_t"] = immuno == "t"
    cns = np.full(n, -1, dtype=np.int16)
    wbc = np.full(n, np.nan)
    for pi, name in enumerate(params.profile_names):
        prof = params.profiles[name]
        mask = cases["profile"] == pi
        k = int(mask.sum())
        if k == 0:
            continue
        if prof.get("cns_status"):
            table = prof["cns_status"]
            idx = _choice(rng, k, list(table.values()))
            cns[mask] = idx
            if (prof.get("stage") or {}).get("from") == "cns_status":
                cases["stage"][mask] = np.array([_label(labels, s) for s in table], dtype=np.int16)[
                    idx
                ]
        if prof.get("wbc"):
            spec = prof["wbc"]
            med = np.where(
                cases["immuno_t"][mask], spec["median"] * spec["t_factor"], spec["median"]
            )
            draw = med * np.exp(spec["sigma"] * rng.standard_normal(k))
            wbc[mask] = np.round(np.clip(draw, 0.1, 1500.0), 1)
    cases["cns"] = cns
    cases["wbc"] = wbc


def _trials(
    rng: np.random.Generator,
    params: Params,
    cohort_countries: list[str],
    cases: dict[str, np.ndarray],
    labels: list[str],
    years: list[int],
) -> None:
    """Enrol eligible cases in the synthetic randomised trials; arm B carries the trial's HR."""
    n = len(cases["sex"])
    trial = np.full(n, -1, dtype=np.int16)
    arm = np.full(n, -1, dtype=np.int8)
    hr = np.ones(n)
    cm = params.casemix
    immuno = cm.immunophenotype.to_numpy()[cases["cm_row"]]
    yr = np.asarray(years)[cases["year_idx"]]
    u = rng.random(n)
    a = rng.integers(0, 2, n)
    for ti, t in enumerate(params.trials):
        pi = params.profile_names.index(t["profile"])
        cidx = [i for i, c in enumerate(cohort_countries) if c in t["countries"]]
        stratum = labels.index(t["stratum"]) if t["stratum"] in labels else -2
        risk_values = (params.profiles[t["profile"]].get("risk") or {}).get("values") or []
        target = cases["risk"] if t["stratum"] in risk_values else cases["stage"]
        elig = (
            (cases["profile"] == pi)
            & np.isin(cases["country"], cidx)
            & (yr >= t["years"][0])
            & (yr <= t["years"][1])
            & (target == stratum)
            & (trial < 0)
        )
        if t.get("immunophenotype"):
            elig &= np.isin(immuno, t["immunophenotype"])
        enrol = elig & (u < t["p_enrol"])
        trial[enrol] = ti
        arm[enrol] = a[enrol]
        hr[enrol & (a == 1)] = float(t["hr_efs"])
    cases["trial"] = trial
    cases["arm"] = arm
    cases["hr"] = hr
    cases["enrol_day"] = np.where(trial >= 0, cases["dx"] + rng.integers(3, 15, n), -1)


def _course(
    rng: np.random.Generator, params: Params, countries: list[str], cases: dict[str, np.ndarray]
) -> None:
    """Latent relapse/progression, toxic death, remission, front-line end, death and censoring."""
    clin = params.clinical
    n = len(cases["sex"])
    grid = np.asarray(clin["grid"], dtype=float)
    income_of_country = np.array(
        [INCOME_LEVELS.index(params.country(c).income_level) for c in countries]
    )
    inc = income_of_country[cases["country"]]
    cases["income"] = inc.astype(np.int8)
    mult = {
        k: np.array([clin["income"][lvl][k] for lvl in INCOME_LEVELS])
        for k in ("event", "trm", "death_after_event")
    }
    cap = float(clin["max_probability"])
    prof = cases["profile"]

    p_event = np.minimum(
        _profile_array(params, "p_event")[prof] * mult["event"][inc] * cases["stratum_mult"], cap
    )
    p_trm = np.minimum(_profile_array(params, "p_trm")[prof] * mult["trm"][inc], cap)
    t_event = np.full(n, np.inf)
    u_event = rng.random(n)
    for shape_name, shape in clin["timing_shapes"].items():
        names = [p for p in params.profile_names if params.profiles[p]["timing"] == shape_name]
        mask = np.isin(prof, [params.profile_names.index(p) for p in names])
        t_event[mask] = draw_latent_time(
            u_event[mask], p_event[mask], cases["hr"][mask], grid, np.asarray(shape, dtype=float)
        )
    t_trm = draw_latent_time(
        rng.random(n), p_trm, cases["hr"], grid, np.asarray(clin["trm_shape"], dtype=float)
    )

    # remission (leukaemias): end of induction, unless the disease is refractory or the child died
    has_rem = np.array([bool(params.profiles[p].get("remission")) for p in params.profile_names])[
        prof
    ]
    rem_t = rng.integers(28, 43, n) / DAYS_PER_YEAR
    refractory = has_rem & (t_event < rem_t + 14 / DAYS_PER_YEAR)
    remission = has_rem & ~refractory & (t_trm > rem_t)
    cases["remission_day"] = np.where(
        remission, cases["dx"] + np.round(rem_t * DAYS_PER_YEAR).astype(np.int64), -1
    )

    # front-line therapy end (planned duration, stopped early by relapse or death)
    fl_weeks = np.array(
        [
            float(params.profiles[p].get("frontline_weeks", clin["relapse"]["frontline_weeks"]))
            if params.profiles[p].get("frontline")
            else np.nan
            for p in params.profile_names
        ]
    )[prof]
    planned = fl_weeks * 7 / DAYS_PER_YEAR + rng.integers(-14, 15, n) / DAYS_PER_YEAR
    fl_end = np.minimum(planned, np.minimum(t_event, t_trm))
    has_fl = ~np.isnan(fl_weeks)
    cases["frontline_end_t"] = np.where(has_fl, fl_end, np.nan)

    cases["t_event_latent"] = t_event
    cases["frontline_planned_t"] = np.where(has_fl, planned, np.nan)
    # the first event happens only if it precedes a toxic death
    event = np.isfinite(t_event) & (t_event < t_trm)
    cases["t_event"] = np.where(event, t_event, np.inf)
    ev_name = np.array([params.profiles[p]["event_name"] for p in params.profile_names])[prof]
    cases["event_is_relapse"] = (ev_name == "relapse") & ~refractory
    cases["refractory"] = refractory & event

    # I-BFM timing of relapse and its site (leukaemias: group I)
    timing = np.full(n, -1, dtype=np.int8)
    rel = clin["relapse"]
    very_early = rel["very_early_months"] * DAYS_PER_MONTH / DAYS_PER_YEAR
    after_fl = rel["early_after_frontline_months"] * DAYS_PER_MONTH / DAYS_PER_YEAR
    lk = event & has_fl & cases["event_is_relapse"]
    te = cases["t_event"]
    timing[lk] = np.where(te[lk] < very_early, 0, np.where(te[lk] < fl_end[lk] + after_fl, 1, 2))
    cases["timing"] = timing
    site = np.full(n, -1, dtype=np.int8)
    leuk = lk & (cases["group"] == 0)
    for si, sex_key in enumerate(("sites_male", "sites_female")):
        m = leuk & (cases["sex"] == si)
        table = rel[sex_key]
        codes = np.array([RELAPSE_SITES.index(s) for s in table], dtype=np.int8)
        site[m] = codes[_choice(rng, int(m.sum()), list(table.values()))]
    cases["relapse_site"] = site

    # death after the first event; its probability depends on relapse timing for ALL
    p_death = np.zeros(n)
    for pi, name in enumerate(params.profile_names):
        m = prof == pi
        spec = params.profiles[name]["p_death_after_event"]
        if isinstance(spec, dict):
            p_death[m] = np.array([spec[c] for c in TIMING_CATEGORIES])[np.maximum(timing[m], 0)]
        else:
            p_death[m] = float(spec)
    p_death = np.minimum(p_death * mult["death_after_event"][inc], 0.97)
    med = _profile_array(params, "death_after_event_median_years", 1.0)[prof]
    dies_after = event & (rng.random(n) < p_death)
    t_de = te + np.maximum(med * np.exp(0.8 * rng.standard_normal(n)), 14 / DAYS_PER_YEAR)
    t_death = np.where(dies_after, t_de, np.where(np.isfinite(t_trm) & ~event, t_trm, np.inf))
    cases["t_death"] = t_death
    cause = np.where(
        dies_after,
        np.array([CAUSES.index(c) for c in clin["death_causes_after_event"]])[
            _choice(rng, n, list(clin["death_causes_after_event"].values()))
        ],
        CAUSES.index("treatment_related"),
    )
    cases["cause"] = np.where(np.isfinite(t_death), cause, -1).astype(np.int8)

    # second relapse/progression between the first and death
    p2 = _profile_array(params, "p_second_event")[prof]
    t2 = te + np.maximum(rng.gamma(2.0, 0.5, n), 30 / DAYS_PER_YEAR)
    second = event & (rng.random(n) < p2) & (t2 < t_death)
    cases["t_second"] = np.where(second, t2, np.inf)
    site2 = np.where(leuk & second, _choice(rng, n, [0.7, 0.1, 0.0, 0.2]), -1).astype(np.int8)
    cases["relapse_site2"] = site2
    # second malignant neoplasm in a few long-term survivors
    t_smn = rng.uniform(2.0, 12.0, n)
    cases["t_smn"] = np.where((rng.random(n) < 0.004) & (t_smn < t_death), t_smn, np.inf)

    # censoring: follow-up cut-off, loss to follow-up, abandonment of treatment
    ltfu_rate = np.array([params.country(c).ltfu_per_year for c in countries])[cases["country"]]
    aband_p = np.array([params.country(c).abandonment for c in countries])[cases["country"]]
    t_ltfu = rng.exponential(1.0, n) / np.maximum(ltfu_rate, 1e-12)
    abandoned = rng.random(n) < aband_p
    t_aband = rng.uniform(0.05, 1.0, n)
    t_ltfu = np.where(abandoned, np.minimum(t_aband, t_ltfu), t_ltfu)
    cases["t_ltfu"] = t_ltfu
    cases["abandoned"] = abandoned & (t_aband <= t_ltfu)


def finalise(cohort: Cohort) -> None:
    """Observed outcome from latent times and censoring: vital status, last contact, death date."""
    c = cohort.cases
    follow = (cohort.cutoff_day - c["dx"]) / DAYS_PER_YEAR
    censor = np.minimum(c["t_ltfu"], follow)
    c["censor_t"] = censor
    dead = c["t_death"] <= censor
    c["dead"] = dead
    death_day = c["dx"] + np.round(np.where(dead, c["t_death"], 0.0) * DAYS_PER_YEAR).astype(
        np.int64
    )
    c["death_day"] = np.where(dead, death_day, -1)
    last = c["dx"] + np.floor(censor * DAYS_PER_YEAR).astype(np.int64)
    c["last_contact_day"] = np.where(dead, death_day, np.maximum(last, c["dx"]))
    # abandoned and lost before the cut-off: fate unknown
    c["vital"] = np.where(dead, 1, np.where(c["abandoned"] & (c["t_ltfu"] < follow), 2, 0)).astype(
        np.int8
    )


def _consent(rng: np.random.Generator, params: Params, cases: dict[str, np.ndarray]) -> list[str]:
    table = params.clinical["consent"]
    cases["consent"] = _choice(rng, len(cases["sex"]), list(table.values()))
    return list(table)


def simulate(
    params: Params,
    countries: list[str],
    years: tuple[int, int],
    patients: int | None,
    seed: int,
) -> Cohort:
    """Draw the whole cohort for the given countries and diagnosis years."""
    for code in countries:
        params.country(code)
    if years[0] > years[1]:
        raise SynthError(f"years {years[0]}-{years[1]}: the first year is after the last")
    if patients is not None and patients < 1:
        raise SynthError(f"--patients {patients}: must be at least 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    yrs = list(range(years[0], years[1] + 1))
    pop, scale, cases, copies = _cases_from_population(rng, params, countries, yrs, patients)
    _dates(rng, cases, yrs)
    _casemix(rng, params, cases)
    labels = _strata(rng, params, cases)
    _leukaemia_features(rng, params, cases, labels)
    _trials(rng, params, countries, cases, labels, yrs)
    _course(rng, params, countries, cases)
    consent = _consent(rng, params, cases)
    cases["origin"] = np.arange(len(cases["dx"]), dtype=np.int64)
    cutoff = day(params.clinical["follow_up_cutoff"].format(last_year_plus_1=years[1] + 1))
    cohort = Cohort(
        countries=countries,
        years=yrs,
        cutoff_day=cutoff,
        scale=scale,
        population=pop,
        cases=cases,
        labels={"stratum": labels, "consent": consent},
        copies=copies,
    )
    return cohort
