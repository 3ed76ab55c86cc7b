"""`ccdp.synth.generate`: draw the partnership's registries and write them with their truth."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ccdp.model import load_model
from ccdp.synth.crossborder import add_cross_border
from ccdp.synth.params import AGE_GROUPS, ICCC_GROUPS, Params, SynthError, load_params
from ccdp.synth.population import population_frame, sex_specific_rates
from ccdp.synth.simulate import Cohort, finalise, simulate
from ccdp.synth.tables import Tables, build_tables
from ccdp.synth.vrt import vrt_truth

DEFAULT_COUNTRIES: tuple[str, ...] = ("FR", "DE", "IT", "PL", "BR", "KE")
Format = Literal["native", "messy"]


@dataclass
class SynthResult:
    """What `generate` wrote: the folder, per-country row counts and the truth document."""

    out_dir: Path
    countries: list[str]
    format: str
    seed: int
    rows: dict[str, dict[str, int]]
    truth_path: Path
    files: list[Path] = field(default_factory=list)

    @property
    def patients(self) -> int:
        return sum(r.get("patient", 0) for r in self.rows.values())

    def truth(self) -> dict[str, Any]:
        return json.loads(self.truth_path.read_text(encoding="utf-8"))


def parse_countries(countries: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if countries is None:
        return list(DEFAULT_COUNTRIES)
    items = countries.split(",") if isinstance(countries, str) else list(countries)
    out = [c.strip().upper() for c in items if c.strip()]
    if not out:
        raise SynthError("no country given (e.g. --countries FR,DE,KE)")
    if len(set(out)) != len(out):
        raise SynthError(f"country listed twice in {','.join(out)}")
    return out


def draw(
    countries: list[str],
    years: tuple[int, int],
    patients: int | None,
    seed: int,
    params: Params | None = None,
    with_identifiers: bool = False,
) -> tuple[Cohort, Tables]:
    """Draw the cohort and render its model tables, without writing anything.

    With identifiers, `cohort.identities` holds names and national ids, and the cross-border
    copies carry birth-date slips (also in their patient rows).
    """
    params = params or load_params()
    cohort = simulate(params, countries, years, patients, seed)
    aux = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))
    add_cross_border(aux, params, cohort)
    _sort(cohort)
    notes: dict[int, list[str]] = {}
    if with_identifiers:
        from ccdp.synth.identifiers import apply_birth_typos

        slips = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 3])))
        notes = apply_birth_typos(slips, cohort)
    finalise(cohort)
    tables = build_tables(cohort, params, aux)
    if with_identifiers:
        from ccdp.synth.identifiers import make_identities

        cohort.identities = make_identities(cohort, tables, seed, params, notes)
    return cohort, tables


def _sort(cohort: Cohort) -> None:
    """Order cases by country then diagnosis date (ids follow this order); keep duplicate links."""
    c = cohort.cases
    order = np.lexsort((np.arange(cohort.n), c["dx"], c["country"]))
    for k in c:
        c[k] = c[k][order]
    pos = np.empty(cohort.n, dtype=np.int64)
    pos[order] = np.arange(cohort.n)
    cohort.duplicates = [(int(pos[a]), int(pos[b])) for a, b in cohort.duplicates]
    c["origin"] = pos[c["origin"]]


def write_csv(table: pa.Table, path: Path) -> None:
    """Plain CSV: header, no quotes, empty field for missing (no value holds , " or newline)."""
    for name in table.column_names:
        col = table[name]
        if (
            pa.types.is_string(col.type)
            and len(col)
            and pc.any(pc.match_substring_regex(col, r'[,"\n\r]')).as_py()
        ):
            raise SynthError(f"internal: {path.name} column {name} has a value needing quotes")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def _earlier_output(out: Path) -> list[Path]:
    """What an earlier `ccdp synth` wrote into `out` (to be replaced, so that no stale country
    folder or file of the other format is read later); refuses a folder holding anything else."""
    entries = list(out.iterdir())
    if not entries:
        return []
    truth = out / "truth.json"
    if not truth.is_file():
        raise SynthError(
            f"{out}: the folder is not empty and holds no earlier ccdp synth output "
            "(truth.json); choose an empty or new folder"
        )
    try:
        countries = json.loads(truth.read_text(encoding="utf-8")).get("countries") or []
    except (OSError, ValueError, AttributeError):
        raise SynthError(f"{truth}: not a ccdp synth truth file; choose another folder") from None
    return [truth, *(out / str(c) for c in countries if (out / str(c)).is_dir())]


def _clear(out: Path, earlier: list[Path]) -> None:
    for path in earlier:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def generate(
    out_dir: str | Path,
    countries: str | list[str] | tuple[str, ...] | None = None,
    patients: int | None = None,
    years: tuple[int, int] = (2005, 2019),
    seed: int = 1,
    format: Format = "native",
    with_identifiers: bool = False,
    progress: Any = None,
) -> SynthResult:
    """Write synthetic registries for `countries` into out_dir/<CC>/ and out_dir/truth.json."""
    if format not in ("native", "messy"):
        raise SynthError(f"format {format!r}: use native or messy")
    codes = parse_countries(countries)
    out = Path(out_dir)
    params = load_params()
    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_output(out)
    cohort, tables = draw(codes, (years[0], years[1]), patients, seed, params, with_identifiers)
    _clear(out, earlier)
    rows: dict[str, dict[str, int]] = {}
    files: list[Path] = []
    pop = population_frame(cohort.population, codes, cohort.years)
    identity = cohort.identities
    errors: list[dict[str, Any]] = []
    for ci, code in enumerate(codes):
        cdir = out / code
        per = {
            name: tables.for_country(name, ci)
            for name in load_model().table_names
            if name != "population"
        }
        per["population"] = pa.Table.from_pandas(
            pop[pop.country == code].reset_index(drop=True), preserve_index=False
        )
        if format == "native":
            for name, t in per.items():
                write_csv(t, cdir / f"{name}.csv")
                files.append(cdir / f"{name}.csv")
            if identity is not None:
                write_csv(identity.for_country(ci), cdir / "identifiers.csv")
                files.append(cdir / "identifiers.csv")
        else:
            from ccdp.synth.messy import write_messy

            written, errs = write_messy(
                code, per, cdir, seed, identity.for_country(ci) if identity is not None else None
            )
            files.extend(written)
            errors.extend(errs)
        rows[code] = {name: t.num_rows for name, t in per.items()}
        if progress is not None:
            progress(code)
    truth = build_truth(
        cohort, tables, params, codes, years, seed, format, with_identifiers, errors, identity
    )
    truth_path = out / "truth.json"
    truth_path.write_text(
        json.dumps(truth, indent=1, sort_keys=False, default=_json_default) + "\n", encoding="utf-8"
    )
    return SynthResult(out, codes, format, seed, rows, truth_path, files)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def build_truth(
    cohort: Cohort,
    tables: Tables,
    params: Params,
    codes: list[str],
    years: tuple[int, int],
    seed: int,
    format: str,
    with_identifiers: bool,
    errors: list[dict[str, Any]],
    identity: Any,
) -> dict[str, Any]:
    """The parameters used and the facts an analysis or an ingest should recover."""
    rates = []
    for code in codes:
        c = params.country(code)
        r = sex_specific_rates(params, float(c.male_share)) * 1e6
        for si, sex in enumerate(("male", "female")):
            for gi, g in enumerate(ICCC_GROUPS):
                for ai, a in enumerate(AGE_GROUPS):
                    rates.append(
                        {
                            "country": code,
                            "iccc_group": g,
                            "age_group": a,
                            "sex": sex,
                            "rate_per_million": round(float(r[si, gi, ai]), 6),
                        }
                    )
    pid = tables.tables["patient"]["patient_id"]
    dup = []
    for origin, copy in cohort.duplicates:
        entry = {
            "patient_ids": [pid[origin].as_py(), pid[copy].as_py()],
            "countries": [
                codes[cohort.cases["country"][origin]],
                codes[cohort.cases["country"][copy]],
            ],
            "relation": "registered in the origin country and again where treated abroad",
        }
        if identity is not None:
            entry["differences"] = identity.differences.get(copy, [])
        dup.append(entry)
    copies = [pid[b].as_py() for _, b in cohort.duplicates]
    return {
        "generator": "ccdp synth",
        "seed": seed,
        "format": format,
        "with_identifiers": with_identifiers,
        "countries": {
            code: {
                "name": params.country(code)["name"],
                "income_level": params.country(code).income_level,
                "patients": int((cohort.cases["country"] == i).sum()),
            }
            for i, code in enumerate(codes)
        },
        "diagnosis_years": [int(years[0]), int(years[1])],
        "follow_up_cutoff": str(np.datetime64(int(cohort.cutoff_day), "D")),
        "population_scale": cohort.scale,
        "incidence": {
            "source": "IICC-3 (Steliarova-Foucher et al., Lancet Oncol 2017); "
            "see ccdp/synth/data/incidence_rates.csv",
            "world_standard_weights": {
                "0": 2400,
                "1-4": 9600,
                "5-9": 10000,
                "10-14": 9000,
                "15-19": 9000,
            },
            "published_asr_0_14": {"all": 140.6, "I": 46.4, "II": 15.2, "III": 28.2},
            "published_rate_15_19": 185.3,
            "rates_per_million": rates,
            "note": "cross-border copies (cross_border_copy_ids) are extra registrations "
            "of children counted in their origin country; exclude them from incidence",
        },
        "case_mix": params.casemix.to_dict(orient="records"),
        "survival": {
            "model": params.clinical,
            "profiles": {name: p.values for name, p in params.profiles.items()},
            "income_level_by_country": {code: params.country(code).income_level for code in codes},
        },
        "relapse": _relapse_truth(params),
        "vrt": {
            "source": "VRT entities of the case mix (ccdp/cohort/derived/data/vrt_entities.csv) "
            "within their ICCC group's rate (case-mix weights in ccdp/synth/data/casemix.csv)",
            "rates": vrt_truth(params, codes, cohort.population),
        },
        "trials": [
            {
                "name": t["name"],
                "arms": t["arms"],
                "hr_efs_arm_b_vs_a": float(t["hr_efs"]),
                "endpoint": "EFS: first relapse/progression or death without it, from diagnosis",
                "eligibility": {
                    k: t[k] for k in ("profile", "stratum", "countries", "years") if k in t
                }
                | ({"immunophenotype": t["immunophenotype"]} if "immunophenotype" in t else {}),
                "enrolled": _count(tables.tables["trial_enrolment"]["trial"], t["name"]),
            }
            for t in params.trials
        ],
        "cross_border_duplicates": dup,
        "cross_border_copy_ids": copies,
        "errors": errors,
    }


def _count(col: pa.ChunkedArray, value: str) -> int:
    return int(pc.sum(pc.equal(col, value)).as_py() or 0)


def _relapse_truth(params: Params) -> dict[str, Any]:
    """Expected share of ALL first relapses per I-BFM timing class, from the timing shape."""
    clin = params.clinical
    grid = np.asarray(clin["grid"])
    shape = np.asarray(clin["timing_shapes"][params.profiles["ALL"]["timing"]])
    rel = clin["relapse"]
    ve = rel["very_early_months"] * 30.4375 / 365.25
    late = (
        rel["frontline_weeks"] * 7 / 365.25 + rel["early_after_frontline_months"] * 30.4375 / 365.25
    )
    g_ve = float(np.interp(ve, grid, shape))
    g_late = float(np.interp(late, grid, shape))
    return {
        "definitions": {
            "very_early": "< 18 months from diagnosis",
            "early": ">= 18 months from diagnosis and < 6 months after frontline_end_date",
            "late": ">= 6 months after frontline_end_date",
            "months": "days / 30.4375",
        },
        "all_timing_shares": {"very_early": g_ve, "early": g_late - g_ve, "late": 1.0 - g_late},
        "all_timing_shares_note": "shares among latent first relapses of ALL given the planned "
        "front-line duration; competing toxic death and censoring remove a few",
        "sites_male": rel["sites_male"],
        "sites_female": rel["sites_female"],
    }
