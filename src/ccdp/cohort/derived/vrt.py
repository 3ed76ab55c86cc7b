"""Very rare tumours (VRT) of childhood: the entity of a tumour from its ICD-O-3 coding.

The rules are data (`data/vrt_entities.csv`, sources in `data/vrt_entities.md`): the first rule a
tumour meets names its entity. The same rules give the view's SQL CASE (`vrt_entity_sql`) and a
Python classifier (`classify`), so the synthetic generator's truth and the view agree by
construction.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ccdp.errors import CcdpError
from ccdp.store.typed import lit


class VrtRuleError(CcdpError):
    """A malformed row of vrt_entities.csv."""


@dataclass(frozen=True)
class VrtRule:
    """One row of vrt_entities.csv: morphology ranges, topography prefixes, behaviour."""

    entity: str
    label: str
    morphology: tuple[tuple[str, str], ...]
    topography: tuple[str, ...]
    behaviour: int

    def matches(
        self, morphology: str | None, topography: str | None, behaviour: int | None
    ) -> bool:
        if morphology is None or behaviour is None or int(behaviour) != self.behaviour:
            return False
        if not any(lo <= morphology <= hi for lo, hi in self.morphology):
            return False
        return not self.topography or any((topography or "").startswith(p) for p in self.topography)

    def sql(self, morphology: str, topography: str, behaviour: str) -> str:
        """The rule as a SQL condition over the three column expressions."""
        morph = " OR ".join(
            f"{morphology} = {lit(lo)}"
            if lo == hi
            else f"{morphology} BETWEEN {lit(lo)} AND {lit(hi)}"
            for lo, hi in self.morphology
        )
        parts = [f"{behaviour} = {self.behaviour}", f"({morph})"]
        if self.topography:
            topo = " OR ".join(f"starts_with({topography}, {lit(p)})" for p in self.topography)
            parts.append(f"({topo})")
        return " AND ".join(parts)


def _ranges(text: str, entity: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in text.split():
        lo, _, hi = item.partition("-")
        hi = hi or lo
        if not (len(lo) == len(hi) == 4 and lo.isdigit() and hi.isdigit() and lo <= hi):
            raise VrtRuleError(f"vrt_entities.csv, {entity}: bad morphology {item!r}")
        out.append((lo, hi))
    if not out:
        raise VrtRuleError(f"vrt_entities.csv, {entity}: no morphology")
    return tuple(out)


@cache
def vrt_rules() -> tuple[VrtRule, ...]:
    """The rules in their order (first match wins)."""
    table = resources.files("ccdp.cohort.derived").joinpath("data/vrt_entities.csv")
    text = table.read_text("utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rules = tuple(
        VrtRule(
            entity=r["entity"],
            label=r["label"],
            morphology=_ranges(r["morphology"], r["entity"]),
            topography=tuple(r["topography"].split()),
            behaviour=int(r["behaviour"]),
        )
        for r in csv.DictReader(lines)
    )
    if len({r.entity for r in rules}) != len(rules):
        raise VrtRuleError("vrt_entities.csv: an entity is named twice")
    return rules


def entity_ids() -> list[str]:
    """The VRT entities in rule order (the declared levels of vrt_entity)."""
    return [r.entity for r in vrt_rules()]


def entity_labels() -> dict[str, str]:
    return {r.entity: r.label for r in vrt_rules()}


def classify(morphology: str | None, topography: str | None, behaviour: int | None) -> str | None:
    """The entity of one tumour, or None when it is not a VRT."""
    return next(
        (r.entity for r in vrt_rules() if r.matches(morphology, topography, behaviour)), None
    )


def vrt_entity_sql(
    morphology: str = "morphology", topography: str = "topography", behaviour: str = "behaviour"
) -> str:
    """CASE giving vrt_entity: the first matching rule's entity, NULL for other tumours."""
    whens = "\n".join(
        f"         WHEN {r.sql(morphology, topography, behaviour)} THEN {lit(r.entity)}"
        for r in vrt_rules()
    )
    return f"CASE\n{whens}\n         END"
