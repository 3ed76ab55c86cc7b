"""Load the synthetic generator's domain tables (rates, populations, case mix, clinical course).

Every number the generator draws from lives in `synth/data/` with its source in a header comment;
this module only parses and checks them, so `truth.json` can echo exactly what was used.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ccdp.errors import CcdpError

AGE_GROUPS: tuple[str, ...] = ("0", "1-4", "5-9", "10-14", "15-19")
AGE_BOUNDS: tuple[tuple[int, int], ...] = ((0, 1), (1, 5), (5, 10), (10, 15), (15, 20))
# Segi world standard population weights for ages 0, 1-4, 5-9, 10-14, 15-19 (per 100 000).
WORLD_STANDARD: tuple[int, ...] = (2400, 9600, 10000, 9000, 9000)
ICCC_GROUPS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "IV",
    "V",
    "VI",
    "VII",
    "VIII",
    "IX",
    "X",
    "XI",
    "XII",
)
SEXES: tuple[str, ...] = ("male", "female")
INCOME_LEVELS: tuple[str, ...] = ("HIC", "UMIC", "LMIC")
# casemix weight column per age group (bands 0-4, 5-14, 15-19)
AGE_BAND_COLUMN: tuple[str, ...] = ("w_0_4", "w_0_4", "w_5_14", "w_5_14", "w_15_19")


class SynthError(CcdpError):
    """Invalid request or inconsistent domain table for the synthetic generator."""


def _data_text(name: str) -> str:
    return resources.files("ccdp.synth.data").joinpath(name).read_text(encoding="utf-8")


def read_data_csv(name: str, **kw: Any) -> pd.DataFrame:
    """Read a packaged CSV whose header lines start with '#' (the source note)."""
    return pd.read_csv(io.StringIO(_data_text(name)), comment="#", keep_default_na=False, **kw)


def read_data_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load(_data_text(name))


@dataclass(frozen=True)
class Profile:
    """Clinical course parameters of one tumour type (defaults merged with its overrides)."""

    name: str
    values: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


@dataclass(frozen=True)
class Params:
    """Everything the generator needs, loaded once."""

    rates: pd.DataFrame
    countries: pd.DataFrame
    casemix: pd.DataFrame
    clinical: dict[str, Any]
    profiles: dict[str, Profile]
    trials: list[dict[str, Any]]
    protocols: pd.DataFrame
    cross_border: pd.DataFrame
    profile_names: tuple[str, ...] = field(default=())

    def country(self, code: str) -> pd.Series:
        rows = self.countries[self.countries.code == code]
        if rows.empty:
            raise SynthError(
                f"unknown country {code!r}; known: {', '.join(self.countries.code)} "
                "(add it to ccdp/synth/data/countries.csv)"
            )
        return rows.iloc[0]

    def rate_array(self) -> np.ndarray:
        """Rates per million (both sexes) as [group, age] and male:female ratios as [group, age]."""
        r = np.zeros((len(ICCC_GROUPS), len(AGE_GROUPS)))
        mf = np.ones_like(r)
        gi = {g: i for i, g in enumerate(ICCC_GROUPS)}
        ai = {a: i for i, a in enumerate(AGE_GROUPS)}
        for row in self.rates.itertuples(index=False):
            r[gi[row.iccc_group], ai[str(row.age_group)]] = row.rate_per_million
            mf[gi[row.iccc_group], ai[str(row.age_group)]] = row.male_female_ratio
        return np.stack([r, mf])


def _check_probabilities(name: str, table: dict[str, float]) -> None:
    total = sum(table.values())
    if abs(total - 1.0) > 1e-6:
        raise SynthError(f"synth/data/clinical.yaml: {name} sums to {total}, not 1")


@cache
def load_params() -> Params:
    """Parse and cross-check the packaged domain tables."""
    rates = read_data_csv("incidence_rates.csv", dtype={"age_group": str})
    countries = read_data_csv("countries.csv")
    casemix = read_data_csv(
        "casemix.csv", dtype={"morphology": str, "topography": str, "immunophenotype": str}
    )
    clinical = read_data_yaml("clinical.yaml")
    trials = read_data_yaml("trials.yaml")["trials"]
    protocols = read_data_csv("protocols.csv")
    cross_border = read_data_csv("cross_border.csv")
    defaults = clinical["defaults"]
    profiles = {
        name: Profile(name, {**defaults, **(over or {})})
        for name, over in clinical["profiles"].items()
    }
    missing = sorted(set(casemix.profile) - set(profiles))
    if missing:
        raise SynthError(f"synth/data/casemix.csv: profiles {missing} not in clinical.yaml")
    for name in ("sites_male", "sites_female"):
        _check_probabilities(f"relapse.{name}", clinical["relapse"][name])
    _check_probabilities("consent", clinical["consent"])
    for p in profiles.values():
        _check_probabilities(
            f"profiles.{p.name}.basis", {k: float(v) for k, v in p["basis"].items()}
        )
        for key in ("stage", "risk"):
            spec = p.get(key)
            if spec and "values" in spec:
                _check_probabilities(
                    f"profiles.{p.name}.{key}.shares",
                    dict(zip(spec["values"], spec["shares"], strict=True)),
                )
    for t in trials:
        if t["profile"] not in profiles:
            raise SynthError(f"synth/data/trials.yaml: trial {t['name']}: unknown profile")
    return Params(
        rates=rates,
        countries=countries,
        casemix=casemix,
        clinical=clinical,
        profiles=profiles,
        trials=trials,
        protocols=protocols,
        cross_border=cross_border,
        profile_names=tuple(profiles),
    )
