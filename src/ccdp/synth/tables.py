"""Render a drawn cohort as the data model's tables (pyarrow), one row per patient/tumour/event/...

Columns are exactly the model's non-derived fields, in model order; ids are unique across countries
(`FR-P000001`, `FR-T000001`, `FR-E0000001`, `FR-X0000001`, `FR-S0000001`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ccdp.model import load_model
from ccdp.synth.params import INCOME_LEVELS, Params, SynthError
from ccdp.synth.simulate import (
    CAUSES,
    CNS_STATUS,
    DAYS_PER_YEAR,
    RELAPSE_SITES,
    Cohort,
    completed_years,
)

VITAL = ("alive", "dead", "unknown")
EVENT_TYPES = ("remission", "relapse", "progression", "second_malignancy", "death")


@dataclass
class Tables:
    """The model tables of a cohort, each sorted by country, plus the row range of each country."""

    tables: dict[str, pa.Table]
    country_col: dict[str, np.ndarray]

    def for_country(self, name: str, country: int) -> pa.Table:
        c = self.country_col[name]
        idx = np.flatnonzero(c == country)
        if len(idx) == 0:
            return self.tables[name].slice(0, 0)
        return self.tables[name].slice(int(idx[0]), int(idx[-1] - idx[0] + 1))


def cat(values: list[str] | tuple[str, ...] | np.ndarray, codes: np.ndarray) -> pa.Array:
    """String array from category codes (-1 = missing)."""
    codes = np.asarray(codes)
    return pa.array(list(values), pa.string()).take(
        pa.array(codes.astype(np.int32), mask=codes < 0)
    )


def date_arr(days: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(days, dtype=np.int32), mask=missing).cast(pa.date32())


def ids(country_codes: pa.Array, seq: np.ndarray, letter: str, width: int) -> pa.Array:
    """`CC-<letter><seq zero-padded>` for every row."""
    width = max(width, len(str(int(seq.max()))) if len(seq) else width)
    num = pc.utf8_lpad(pc.cast(pa.array(seq, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(country_codes, num, f"-{letter}")


def seq_within(country: np.ndarray) -> np.ndarray:
    """1-based running number within each country of rows already sorted by country."""
    n = len(country)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.r_[0, np.flatnonzero(np.diff(country)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, n]))
    return np.arange(n) - first + 1


def _check(name: str, table: pa.Table) -> pa.Table:
    expected = [f.name for f in load_model().table(name).input_fields]
    if table.column_names != expected:
        raise SynthError(f"internal: table {name} columns {table.column_names} != model {expected}")
    return table


def build_tables(cohort: Cohort, params: Params, rng: np.random.Generator) -> Tables:
    """All model tables for a finalised cohort whose cases are sorted by country then diagnosis."""
    c = cohort.cases
    countries = np.asarray(cohort.countries)
    cc = pa.array(countries).take(pa.array(c["country"].astype(np.int32)))
    seq = seq_within(c["country"])
    pid = ids(cc, seq, "P", 6)
    tid = ids(cc, seq, "T", 6)
    out: dict[str, pa.Table] = {}
    ccol: dict[str, np.ndarray] = {}

    out["patient"] = _check("patient", _patient(cohort, params, rng, pid, cc))
    ccol["patient"] = c["country"]
    out["tumour"] = _check("tumour", _tumour(cohort, params, rng, pid, tid))
    ccol["tumour"] = c["country"]
    for name, builder in (
        ("event", _events),
        ("treatment", _treatments),
        ("trial_enrolment", _trial_enrolment),
        ("biomarker", _biomarkers),
        ("specimen", _specimens),
    ):
        rows, table = builder(cohort, params, rng, pid, tid, cc)
        out[name] = _check(name, table)
        ccol[name] = c["country"][rows]
    return Tables(out, ccol)


def _birth_dates(cohort: Cohort, rng: np.random.Generator) -> pa.Array:
    """ISO birth dates; a few registries (DE here) withhold the day for some children (YYYY-MM)."""
    c = cohort.cases
    s = pc.cast(date_arr(c["birth"]), pa.string())
    month_only = np.zeros(cohort.n, dtype=bool)
    if "DE" in cohort.countries:
        de = c["country"] == cohort.countries.index("DE")
        # only where the day imputed by readers (the 15th) gives the same age at diagnosis
        b = c["birth"].astype("datetime64[D]")
        imputed = (b.astype("datetime64[M]").astype("datetime64[D]") + 14).astype(np.int64)
        same_age = completed_years(imputed, c["dx"]) == completed_years(c["birth"], c["dx"])
        month_only = de & (rng.random(cohort.n) < 0.03) & same_age & (imputed <= c["dx"])
    c["birth_month_only"] = month_only
    return pc.if_else(pa.array(month_only), pc.utf8_slice_codeunits(s, 0, 7), s)


def _patient(
    cohort: Cohort, params: Params, rng: np.random.Generator, pid: pa.Array, cc: pa.Array
) -> pa.Table:
    c = cohort.cases
    return pa.table(
        {
            "patient_id": pid,
            "sex": cat(("male", "female"), c["sex"]),
            "birth_date": _birth_dates(cohort, rng),
            "country": cc,
            "vital_status": cat(VITAL, c["vital"]),
            "last_contact_date": date_arr(c["last_contact_day"]),
            "death_date": date_arr(c["death_day"], ~c["dead"]),
            "cause_of_death": cat(CAUSES, np.where(c["dead"], c["cause"], -1)),
            "consent": cat(cohort.labels["consent"], c["consent"]),
        }
    )


def _per_profile(params: Params, key: str, default: Any = None) -> list[Any]:
    return [params.profiles[p].get(key, default) for p in params.profile_names]


def _tumour(
    cohort: Cohort, params: Params, rng: np.random.Generator, pid: pa.Array, tid: pa.Array
) -> pa.Table:
    c = cohort.cases
    n = cohort.n
    cm = params.casemix
    row = c["cm_row"]
    prof = c["profile"]
    # basis of diagnosis per profile
    basis = np.full(n, -1, dtype=np.int16)
    u = rng.random(n)
    for pi, spec in enumerate(_per_profile(params, "basis")):
        m = prof == pi
        codes = np.array([int(k) for k in spec])
        cdf = np.cumsum(list(spec.values()))
        basis[m] = codes[np.searchsorted(cdf / cdf[-1], u[m], side="right")]
    # laterality: paired organs right/left (some bilateral), everything else not paired
    paired = np.array([v == "paired" for v in _per_profile(params, "laterality")])[prof]
    bil_p = np.array([float(v or 0.0) for v in _per_profile(params, "bilateral", 0.0)])[prof]
    lat_labels = ("not_paired", "right", "left", "bilateral")
    ul = rng.random(n)
    lat = np.where(paired, np.where(ul < bil_p, 3, np.where(rng.random(n) < 0.5, 1, 2)), 0)
    c["bilateral"] = lat == 3
    # Wilms tumour: bilateral disease is stage V
    stage = c["stage"].copy()
    labels = cohort.labels["stratum"]
    for pi, spec in enumerate(_per_profile(params, "stage")):
        if spec and spec.get("bilateral_stage"):
            if spec["bilateral_stage"] not in labels:
                labels.append(spec["bilateral_stage"])
            stage[(prof == pi) & c["bilateral"]] = labels.index(spec["bilateral_stage"])
    c["stage"] = stage
    has_stage = stage >= 0
    fl_missing = np.isnan(c["frontline_end_t"])
    fl_day = c["dx"] + np.round(np.nan_to_num(c["frontline_end_t"]) * DAYS_PER_YEAR).astype(
        np.int64
    )
    # front-line end is known only once reached within follow-up
    fl_missing |= fl_day > c["last_contact_day"]
    c["frontline_end_day"] = np.where(fl_missing, -1, fl_day)
    immuno = cm.immunophenotype.to_numpy()[row]
    return pa.table(
        {
            "tumour_id": tid,
            "patient_id": pid,
            "diagnosis_date": date_arr(c["dx"]),
            "topography": pa.array(cm.topography.to_numpy()[row], pa.string()),
            "morphology": pa.array(cm.morphology.to_numpy()[row], pa.string()),
            "behaviour": pa.array(cm.behaviour.to_numpy()[row].astype(np.int64)),
            "basis_of_diagnosis": pa.array(basis.astype(np.int64)),
            "laterality": cat(lat_labels, lat),
            "immunophenotype": _empty_to_null(immuno),
            "wbc_at_diagnosis": pa.array(c["wbc"], mask=np.isnan(c["wbc"])),
            "cns_status": cat(CNS_STATUS, c["cns"]),
            "stage_system": pa.array(
                np.where(has_stage, "toronto_tier2", np.array(None, dtype=object)), pa.string()
            ),
            "stage": cat(labels, stage),
            "risk_group": cat(labels, c["risk"]),
            "frontline_end_date": date_arr(c["frontline_end_day"], fl_missing),
        }
    )


def _empty_to_null(values: np.ndarray) -> pa.Array:
    arr = pa.array(values, pa.string())
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _years_to_day(dx: np.ndarray, t: np.ndarray) -> np.ndarray:
    return dx + np.round(np.where(np.isfinite(t), t, 0.0) * DAYS_PER_YEAR).astype(np.int64)


def _stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {k: np.zeros(0, dtype=np.int64) for k in ("case", "date", "kind", "unit")}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _sorted(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((parts["kind"], parts["date"], parts["case"]))
    return {k: v[order] for k, v in parts.items()}


def _events(
    cohort: Cohort,
    params: Params,
    rng: np.random.Generator,
    pid: pa.Array,
    tid: pa.Array,
    cc: pa.Array,
) -> tuple[np.ndarray, pa.Table]:
    c = cohort.cases
    n = cohort.n
    idx = np.arange(n)
    last = c["last_contact_day"]
    parts = []

    def add(mask, day, etype, site=None, blasts=None):
        k = int(mask.sum())
        parts.append(
            {
                "case": idx[mask],
                "date": day[mask],
                "kind": np.full(k, EVENT_TYPES.index(etype), dtype=np.int8),
                "site": (site[mask] if site is not None else np.full(k, -1)).astype(np.int8),
                "blasts": blasts[mask] if blasts is not None else np.full(k, np.nan),
            }
        )

    leuk = c["group"] == 0
    low_blasts = np.round(rng.uniform(0.0, 4.9, n), 1)
    high_blasts = np.round(np.clip(60.0 * np.exp(0.4 * rng.standard_normal(n)), 5.1, 100.0), 1)
    # an isolated marrow relapse has >= 25% blasts by definition (ALL-REZ BFM; Tallen et al.,
    # J Clin Oncol 2010), a combined one >= 5% (ccdp.cohort.derived relapse_site_groups.csv)
    isolated_bm_blasts = np.maximum(high_blasts, 25.0)
    rem = (c["remission_day"] >= 0) & (c["remission_day"] <= last)
    add(rem, c["remission_day"], "remission", blasts=np.where(leuk, low_blasts, np.nan))
    ev_day = _years_to_day(c["dx"], c["t_event"])
    ev = np.isfinite(c["t_event"]) & (c["t_event"] <= c["censor_t"]) & (ev_day <= last)
    site = c["relapse_site"]
    marrow = (site == 0) | (site == 3)
    bl = np.where(
        leuk,
        np.where(site == 0, isolated_bm_blasts, np.where(marrow, high_blasts, low_blasts)),
        np.nan,
    )
    is_rel = c["event_is_relapse"]
    add(ev & is_rel, ev_day, "relapse", site=site, blasts=bl)
    add(ev & ~is_rel, ev_day, "progression", blasts=np.where(leuk, high_blasts, np.nan))
    c["event_day"] = np.where(ev, ev_day, -1)
    d2 = _years_to_day(c["dx"], c["t_second"])
    ev2 = np.isfinite(c["t_second"]) & (c["t_second"] <= c["censor_t"]) & (d2 <= last) & ev
    site2 = c["relapse_site2"]
    bl2 = np.where(
        leuk,
        np.where(site2 == 0, isolated_bm_blasts, np.where(site2 == 3, high_blasts, low_blasts)),
        np.nan,
    )
    add(ev2 & is_rel, d2, "relapse", site=site2, blasts=bl2)
    add(ev2 & ~is_rel, d2, "progression")
    c["second_day"] = np.where(ev2, d2, -1)
    dsmn = _years_to_day(c["dx"], c["t_smn"])
    add(
        np.isfinite(c["t_smn"]) & (dsmn <= last) & (c["t_smn"] <= c["censor_t"]),
        dsmn,
        "second_malignancy",
    )
    add(c["dead"], c["death_day"], "death")
    e = _sorted(_stack(parts))
    ecc = c["country"][e["case"]]
    eid = ids(cc.take(pa.array(e["case"])), seq_within(ecc), "E", 7)
    sites = RELAPSE_SITES
    table = pa.table(
        {
            "event_id": eid,
            "tumour_id": tid.take(pa.array(e["case"])),
            "event_type": cat(EVENT_TYPES, e["kind"]),
            "event_date": date_arr(e["date"]),
            "relapse_site": cat(sites, np.where(e["kind"] == 1, e["site"], -1)),
            "bm_blasts_pct": pa.array(e["blasts"], mask=np.isnan(e["blasts"])),
        }
    )
    return e["case"], table


def _protocol_codes(cohort: Cohort, params: Params, names: list[str]) -> np.ndarray:
    """Front-line protocol per case (a code into `names`) from protocols.csv."""
    c = cohort.cases
    n = cohort.n
    out = np.full(n, -1, dtype=np.int32)
    yr = np.asarray(cohort.years)[c["year_idx"]]
    prof_names = list(params.profile_names)
    p = params.protocols
    # most specific first: profile and country, then profile (any country), then the default
    ranked = p.assign(rank=(p.profile == "*").astype(int) * 2 + (p.country == "*").astype(int))
    for r in ranked.sort_values("rank", kind="stable").itertuples(index=False):
        m = (out < 0) & (yr >= r.year_from) & (yr <= r.year_to)
        if r.profile != "*":
            m &= c["profile"] == prof_names.index(r.profile)
        if r.country != "*":
            if r.country not in cohort.countries:
                continue
            m &= c["country"] == cohort.countries.index(r.country)
        out[m] = _intern(names, r.protocol)
    return out


def _profile_codes(params: Params, key: str, names: list[str], prof: np.ndarray) -> np.ndarray:
    """Code (into `names`) of a per-profile string parameter for every case; -1 when unset."""
    per = [params.profiles[p].get(key) for p in params.profile_names]
    codes = np.array([_intern(names, v) if v else -1 for v in per], dtype=np.int32)
    return codes[prof]


TREATMENT_TYPES = (
    "chemotherapy",
    "radiotherapy",
    "surgery",
    "hsct",
    "immunotherapy",
    "car_t",
    "targeted",
    "other",
)


def _year(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _treatments(
    cohort: Cohort,
    params: Params,
    rng: np.random.Generator,
    pid: pa.Array,
    tid: pa.Array,
    cc: pa.Array,
) -> tuple[np.ndarray, pa.Table]:
    """Front-line therapy, surgery, radiotherapy, HSCT, trial arms and treatment at relapse."""
    c = cohort.cases
    n = cohort.n
    idx = np.arange(n)
    dx = c["dx"]
    last = c["last_contact_day"]
    prof = c["profile"]
    rt = params.clinical["relapse_therapy"]
    agents: list[str] = []
    protocols: list[str] = []
    parts = []
    none = np.full(n, -1, dtype=np.int32)

    def add(mask, start, end, ttype, agent=none, protocol=none):
        mask = mask & (start <= last)
        end_known = (end >= 0) & (end <= last)
        parts.append(
            {
                "case": idx[mask],
                "date": start[mask],
                "end": np.where(end_known, end, -1)[mask],
                "kind": np.full(int(mask.sum()), TREATMENT_TYPES.index(ttype), dtype=np.int8),
                "agent": np.broadcast_to(agent, (n,))[mask],
                "protocol": np.broadcast_to(protocol, (n,))[mask],
            }
        )

    def prob(key):
        per = [float(params.profiles[p].get(key) or 0.0) for p in params.profile_names]
        return np.array(per)[prof]

    def code(names, value):
        return np.full(n, _intern(names, value), dtype=np.int32)

    has_fl = ~np.isnan(c["frontline_end_t"])
    fl_end = c["frontline_end_day"]
    chemo_start = np.where(has_fl, dx + rng.integers(0, 4, n), dx + rng.integers(3, 22, n))
    # front-line therapy stopped by an event in its first days started no later than that
    chemo_start = np.where(has_fl & (fl_end >= 0), np.minimum(chemo_start, fl_end), chemo_start)
    chemo_end = np.where(has_fl, fl_end, chemo_start + rng.integers(120, 366, n))
    chemo = has_fl | (rng.random(n) < prob("chemotherapy"))
    add(
        chemo,
        chemo_start,
        chemo_end,
        "chemotherapy",
        protocol=_protocol_codes(cohort, params, protocols),
    )
    surg_day = dx + rng.integers(1, 61, n)
    c["surgery_day"] = np.where(
        (rng.random(n) < prob("surgery")) & (surg_day <= last), surg_day, -1
    )
    surg_agent = _profile_codes(params, "surgery_agent", agents, prof)
    add(c["surgery_day"] >= 0, surg_day, surg_day, "surgery", agent=surg_agent)
    rt_start = dx + rng.integers(60, 201, n)
    add(rng.random(n) < prob("radiotherapy"), rt_start, rt_start + 42, "radiotherapy")
    labels = cohort.labels["stratum"]
    high = c["risk"] == labels.index("high") if "high" in labels else np.zeros(n, dtype=bool)
    hsct_day = dx + rng.integers(120, 201, n)
    before_event = (c["event_day"] < 0) | (c["event_day"] > hsct_day)
    hsct = high & (rng.random(n) < prob("hsct_high_risk")) & before_event
    add(hsct, hsct_day, hsct_day, "hsct", agent=code(agents, "allogeneic HSCT"))
    targeted = _profile_codes(params, "targeted", agents, prof)
    add(targeted >= 0, dx + 3, none, "targeted", agent=targeted)
    for ti, t in enumerate(params.trials):
        start = c["enrol_day"] + rng.integers(30, 121, n)
        arm_b = (c["trial"] == ti) & (c["arm"] == 1)
        exp = t["experimental"]
        add(arm_b, start, start + 60, exp["type"], agent=code(agents, exp["agent"]))
    # treatment at first relapse / progression
    ev_day = c["event_day"]
    ev = ev_day >= 0
    ev_year = _year(ev_day)
    inc = c["income"]
    hic = inc == INCOME_LEVELS.index("HIC")
    leuk = (c["group"] == 0) & c["event_is_relapse"]
    late_p = _intern(protocols, rt["protocol_hic_from_2016"])
    early_p = _intern(protocols, rt["protocol_hic_before_2016"])
    other_p = _intern(protocols, rt["protocol_other"])
    rel_protocol = np.where(hic, np.where(ev_year >= 2016, late_p, early_p), other_p)
    add(ev & leuk, ev_day + 3, none, "chemotherapy", protocol=rel_protocol.astype(np.int32))
    solid2 = ev & ~leuk & (rng.random(n) < rt["p_second_line_solid"])
    add(
        solid2,
        ev_day + rng.integers(7, 31, n),
        none,
        "chemotherapy",
        protocol=code(protocols, rt["second_line_solid"]),
    )
    blin = rt["blinatumomab"]
    m = ev & leuk & hic & (ev_year >= blin["from_year"]) & (rng.random(n) < blin["p"])
    bd = ev_day + rng.integers(30, 91, n)
    add(m, bd, bd + 28, "immunotherapy", agent=code(agents, "blinatumomab"))
    p_h = np.array([rt["hsct"][lvl] for lvl in INCOME_LEVELS])[inc]
    hd = ev_day + rng.integers(90, 181, n)
    add(ev & leuk & (rng.random(n) < p_h), hd, hd, "hsct", agent=code(agents, "allogeneic HSCT"))
    cart = rt["car_t"]
    s2 = c["second_day"]
    m = (s2 >= 0) & leuk & hic & (_year(s2) >= cart["from_year"]) & (rng.random(n) < cart["p"])
    cd = s2 + rng.integers(30, 91, n)
    add(m, cd, cd, "car_t", agent=code(agents, cart["agent"]))

    e = _sorted(_stack(parts))
    ecc = c["country"][e["case"]]
    table = pa.table(
        {
            "treatment_id": ids(cc.take(pa.array(e["case"])), seq_within(ecc), "X", 7),
            "tumour_id": tid.take(pa.array(e["case"])),
            "type": cat(TREATMENT_TYPES, e["kind"]),
            "agent": cat(agents, e["agent"]),
            "protocol": cat(protocols, e["protocol"]),
            "start_date": date_arr(e["date"]),
            "end_date": date_arr(e["end"], e["end"] < 0),
        }
    )
    return e["case"], table


def _intern(values: list[str], v: str) -> int:
    if v not in values:
        values.append(v)
    return values.index(v)


def _trial_enrolment(
    cohort: Cohort,
    params: Params,
    rng: np.random.Generator,
    pid: pa.Array,
    tid: pa.Array,
    cc: pa.Array,
) -> tuple[np.ndarray, pa.Table]:
    c = cohort.cases
    rows = np.flatnonzero(c["trial"] >= 0)
    names = [t["name"] for t in params.trials]
    arms = [[t["arms"][0], t["arms"][1]] for t in params.trials]
    arm_labels = [a for pair in arms for a in pair]
    arm_code = c["trial"][rows] * 2 + c["arm"][rows]
    strata = np.array([t["stratum"] for t in params.trials], dtype=object)
    enrol_ok = c["enrol_day"][rows] <= c["last_contact_day"][rows]
    rows = rows[enrol_ok]
    arm_code = arm_code[enrol_ok]
    table = pa.table(
        {
            "patient_id": pid.take(pa.array(rows)),
            "trial": cat(names, c["trial"][rows]),
            "arm": cat(arm_labels, arm_code),
            "enrolment_date": date_arr(c["enrol_day"][rows]),
            "risk_group": pa.array(
                strata[c["trial"][rows]].astype(str) if len(rows) else [], pa.string()
            ),
        }
    )
    return rows, table


def _biomarkers(
    cohort: Cohort,
    params: Params,
    rng: np.random.Generator,
    pid: pa.Array,
    tid: pa.Array,
    cc: pa.Array,
) -> tuple[np.ndarray, pa.Table]:
    """Fusion genes (ALL), MRD at day 33 (ALL, by risk group), MYCN amplification (by stage)."""
    c = cohort.cases
    n = cohort.n
    idx = np.arange(n)
    last = c["last_contact_day"]
    labels = cohort.labels["stratum"]
    parts = []
    texts = []
    markers: list[str] = []
    pos_neg = pa.array(["negative", "positive"])

    def add(mask, day, marker, values: pa.Array, unit: int):
        mask = mask & (day <= last)
        k = int(mask.sum())
        parts.append(
            {
                "case": idx[mask],
                "date": day[mask],
                "kind": np.full(k, _intern(markers, marker), dtype=np.int16),
                "unit": np.full(k, unit, dtype=np.int8),
            }
        )
        texts.append(values.filter(pa.array(mask)))

    for pi, name in enumerate(params.profile_names):
        spec = params.profiles[name].get("biomarkers") or {}
        m = c["profile"] == pi
        if not m.any():
            continue
        for marker, s in spec.items():
            if marker == "MRD_day33":
                med = np.full(n, np.nan)
                for rv, mv in s["median_pct"].items():
                    if rv in labels:
                        med[c["risk"] == labels.index(rv)] = mv
                draw = med * np.exp(float(s["sigma"]) * rng.standard_normal(n))
                val = np.round(np.minimum(draw, 100.0), 4)
                ok = m & ~np.isnan(val) & (c["remission_day"] >= 0)
                text = pc.cast(pa.array(np.nan_to_num(val)), pa.string())
                add(ok, c["dx"] + 33, marker, text, 1)
            elif set(s) & {"b_precursor", "t"}:
                p = np.where(c["immuno_t"], s.get("t", 0.0), s.get("b_precursor", 0.0))
                add(
                    m,
                    c["dx"] + 3,
                    marker,
                    pos_neg.take(pa.array((rng.random(n) < p).astype(np.int8))),
                    0,
                )
            else:
                p = np.zeros(n)
                for stage_value, pv in s.items():
                    if stage_value in labels:
                        p[c["stage"] == labels.index(stage_value)] = pv
                add(
                    m,
                    c["dx"] + 10,
                    marker,
                    pos_neg.take(pa.array((rng.random(n) < p).astype(np.int8))),
                    0,
                )
    e = _stack(parts)
    values = pa.concat_arrays(texts) if texts else pa.array([], pa.string())
    order = np.lexsort((e["kind"], e["date"], e["case"]))
    e = {k: v[order] for k, v in e.items()}
    table = pa.table(
        {
            "tumour_id": tid.take(pa.array(e["case"])),
            "marker": cat(markers, e["kind"]),
            "value": values.take(pa.array(order)),
            "unit": cat(("%",), np.where(e["unit"] == 1, 0, -1)),
            "date": date_arr(e["date"]),
        }
    )
    return e["case"], table


def _specimens(
    cohort: Cohort,
    params: Params,
    rng: np.random.Generator,
    pid: pa.Array,
    tid: pa.Array,
    cc: pa.Array,
) -> tuple[np.ndarray, pa.Table]:
    c = cohort.cases
    n = cohort.n
    idx = np.arange(n)
    last = c["last_contact_day"]
    types = ("bone_marrow", "peripheral_blood", "tumour_tissue", "csf", "dna", "rna", "other")
    parts = []
    avail = float(params.clinical["specimen_available"])
    for ti, t in enumerate(types):
        p = np.array(
            [
                float((params.profiles[name].get("specimens") or {}).get(t, 0.0))
                for name in params.profile_names
            ]
        )[c["profile"]]
        if not p.any():
            continue
        day = c["dx"] + (1 if t == "csf" else 0)
        if t == "tumour_tissue":
            day = np.where(c["surgery_day"] >= 0, c["surgery_day"], c["dx"] + 2)
        day = np.broadcast_to(day, (n,))
        m = (rng.random(n) < p) & (day <= last)
        k = int(m.sum())
        parts.append(
            {
                "case": idx[m],
                "date": day[m],
                "kind": np.full(k, ti, dtype=np.int8),
                "avail": rng.random(n)[m] < avail,
            }
        )
    e = _stack(parts)
    order = np.lexsort((e["kind"], e["date"], e["case"]))
    e = {k: v[order] for k, v in e.items()}
    ecc = c["country"][e["case"]]
    table = pa.table(
        {
            "specimen_id": ids(cc.take(pa.array(e["case"])), seq_within(ecc), "S", 7),
            "tumour_id": tid.take(pa.array(e["case"])),
            "type": cat(types, e["kind"]),
            "collection_date": date_arr(e["date"]),
            "available": pa.array(e["avail"]),
        }
    )
    return e["case"], table
