"""The Feasibility page: pick cohort filters, see disclosure-checked counts by country at once.

A submitted form becomes a `count` study (`by: [country]`) under an approved project whose
analyses include `count` (by default the partnership's standing feasibility project), posted to
`/api/studies` with the researcher's token. The page then shows the counts as they arrive: htmx
long-polls a fragment route until the study is done; without script the page refreshes itself.
Suppressed cells read "suppressed", a node that refused says why, and the total is shown only
when it cannot give away a suppressed cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ccdp.report.html import node_label, shown_reason
from ccdp.terminology.countries import country_name
from ccdp.web.hubapi import ApiError
from ccdp.web.pages import Signed, api, checked_multi, need_page, render

router = APIRouter()
PATH = "/feasibility"
WAIT_SECONDS = 5  # each fragment request long-polls the study this long before answering
UNIT_WORDS = {"patients": "patients", "tumours": "tumours", "specimens": "available specimens"}


# -- the filters' choices, from the terminology and the data model ------------------------------
@cache
def iccc_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str, list[tuple[str, str]]]]]:
    """ICCC-3 main groups (code, label) and, per group, its subgroups (code, label), in the
    classification's order (ICCC-3, 2017 update)."""
    from ccdp.terminology.iccc import iccc_codes

    codes = iccc_codes("2017")
    groups: dict[str, str] = {}
    subs: dict[str, dict[str, str]] = {}
    for row in codes.to_dict("records"):
        groups.setdefault(row["group"], row["group_label"])
        subs.setdefault(row["group"], {}).setdefault(row["subgroup"], row["subgroup_label"])
    return (
        list(groups.items()),
        [(g, groups[g], list(subs[g].items())) for g in groups],
    )


@cache
def model_levels(table: str, column: str) -> list[str]:
    """A field's allowed values in the data model's own order."""
    from ccdp.model.schema import load_model

    fields = load_model().tables[table].fields
    return [str(v) for v in next(f.allowed for f in fields if f.name == column) or []]


@cache
def model_choices(table: str, column: str) -> list[tuple[str, str]]:
    """A field's allowed values with the words the data model gives them (value, label)."""
    from ccdp.model.schema import load_model

    field = load_model().table(table).field(column)
    return [(v, field.label(v)) for v in model_levels(table, column)]


def specimen_words(value: str) -> str:
    """A specimen type as the page writes it (the data model's label)."""
    from ccdp.model.schema import load_model

    return load_model().table("specimen").field("type").label(value)


def choices() -> dict[str, Any]:
    groups, subgroups = iccc_choices()
    return {
        "groups": groups,
        "subgroups": subgroups,
        "age_groups": model_levels("population", "age_group"),
        "sexes": model_levels("patient", "sex"),
        "immunophenotypes": model_choices("tumour", "immunophenotype"),
        "specimen_types": model_choices("specimen", "type"),
    }


# -- the form -----------------------------------------------------------------------------------
MULTI = ("iccc_group", "iccc_subgroup", "age_group", "immunophenotype", "specimen_type")
SINGLE = ("sex", "relapsed", "year_from", "year_to", "unit", "project")


@dataclass
class Filters:
    """What the form holds (and what the redirect's query string carries, so it stays filled)."""

    multi: dict[str, list[str]] = field(default_factory=dict)
    single: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, values: dict[str, list[str]]) -> Filters:
        multi = {k: [v for v in values.get(k, []) if v] for k in MULTI}
        single = {k: (values.get(k) or [""])[-1].strip() for k in SINGLE}
        return cls(multi=multi, single=single)

    def cohort(self) -> tuple[dict[str, Any], list[str]]:
        """The cohort spec these filters select, and the problems with what was typed."""
        out: dict[str, Any] = {k: v for k, v in self.multi.items() if v}
        problems: list[str] = []
        if self.single.get("sex"):
            out["sex"] = self.single["sex"]
        if self.single.get("relapsed") in ("0", "1"):
            out["relapsed"] = int(self.single["relapsed"])
        years: dict[str, int] = {}
        for key, end in (("year_from", "from"), ("year_to", "to")):
            text = self.single.get(key, "")
            if not text:
                continue
            if not text.isdigit() or not 1900 <= int(text) <= 2100:
                problems.append(f"Diagnosis year {end}: {text!r} is not a year (1900–2100).")
            else:
                years[end] = int(text)
        if "from" in years and "to" in years and years["from"] > years["to"]:
            problems.append("Diagnosis years: the first year is after the last.")
        if years and not problems:
            out["diagnosis_year"] = years
        if out.get("specimen_type") and self.unit() != "specimens":
            problems.append("Specimen types narrow a count of available specimens only.")
        return out, problems

    def unit(self) -> str:
        unit = self.single.get("unit", "")
        return unit if unit in UNIT_WORDS else "patients"

    def query(self) -> str:
        pairs = [(k, v) for k, vs in self.multi.items() for v in vs]
        pairs += [(k, v) for k, v in self.single.items() if v]
        return urlencode(pairs)

    def words(self) -> str:
        """The filters in a sentence (the study's title and the result's caption)."""
        cohort, _ = self.cohort()
        if not cohort:
            return "all children"
        parts = []
        for k, v in cohort.items():
            if k == "diagnosis_year":
                parts.append(f"diagnosed {v.get('from', '…')}–{v.get('to', '…')}")
            elif k == "relapsed":
                parts.append("relapsed" if v == 1 else "not relapsed")
            elif k == "specimen_type":
                parts.append(", ".join(specimen_words(t) for t in v))
            else:
                values = v if isinstance(v, list) else [v]
                parts.append(f"{k.replace('_', ' ')} {', '.join(map(str, values))}")
        return "; ".join(parts)


def count_projects(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Approved projects that may run `count`, the feasibility one first."""
    usable = [
        p
        for p in projects
        if p.get("state") == "approved" and "count" in (p.get("terms") or {}).get("analyses", [])
    ]
    return sorted(
        usable, key=lambda p: (not p["title"].lower().startswith("feasibility"), p["title"])
    )


def study_spec(filters: Filters, project: str) -> dict[str, Any]:
    cohort, _ = filters.cohort()
    spec: dict[str, Any] = {
        "title": f"Feasibility: {filters.unit()} by country ({filters.words()})"[:300],
        "analysis": "count",
        "by": ["country"],
        "unit": filters.unit(),
        "project": project,
        "min_nodes": 1,  # a node that refuses (too few children) must not hide the others
    }
    if cohort:
        spec["cohort"] = cohort
    return spec


# -- the result ---------------------------------------------------------------------------------
def count_table(study: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows by country (the nodes' pooled, disclosure-checked cells, each node's status) and the
    total when the result carries one that no suppressed cell can be worked out from."""
    outcome = study.get("result") or {}
    result = outcome.get("result") or {}
    statuses: dict[str, dict[str, Any]] = outcome.get("nodes") or {}
    country_of = {n["name"]: n["country"] for n in nodes}
    cells = {c.get("country"): c for c in result.get("cells") or []}
    asked = list(statuses) or list(study.get("nodes") or []) or list(country_of)
    codes = sorted({country_of.get(n, n) for n in asked} | {c for c in cells if c})
    names = dict(zip(codes, country_name(codes), strict=True)) if codes else {}
    rows = []
    for code in codes:
        node_rows = []
        for name in asked:
            if country_of.get(name, name) != code:
                continue
            st = statuses.get(name) or {}
            status = st.get("status") or "waiting"
            node_rows.append(
                {
                    "name": name,
                    "status": status,
                    "label": node_label(status, st.get("reason")) if st else "waiting",
                    "reason": shown_reason(st.get("reason")),
                }
            )
        cell = cells.get(code)
        rows.append(
            {
                "code": code,
                "name": names.get(code) if isinstance(names.get(code), str) else code,
                "cell": cell,
                "suppressed": bool(cell and cell.get("suppressed")),
                "count": None if not cell or cell.get("suppressed") else cell.get("n"),
                "nodes": node_rows,
                "answered": any(n["status"] == "answered" for n in node_rows),
            }
        )
    rows.sort(key=lambda r: r["name"])
    per_country = {r["code"]: sum(1 for n in r["nodes"] if n["status"] == "answered") for r in rows}
    suppressed = int(result.get("suppressed_cells") or 0)
    total = result.get("total")
    show_total = bool(result) and total is not None and suppressed == 0
    return {
        "rows": rows,
        "unit": UNIT_WORDS.get(result.get("unit") or "patients", "patients"),
        "total": total if show_total else None,
        "total_note": (
            None
            if show_total or not result
            else "withheld by a node"
            if total is None
            else "withheld: with a suppressed cell it would let that cell be worked out"
        ),
        "suppressed": suppressed,
        "unlisted": int(result.get("unlisted_cells") or 0),
        "has_result": bool(result),
        "error": outcome.get("error"),
        "method": method_words(
            result.get("method"),
            max(per_country.values(), default=1),
            sum(per_country.values()),
        )
        if result
        else None,
    }


def method_words(
    method: dict[str, Any] | None, most_nodes: int = 1, answered: int = 0
) -> dict[str, str]:
    """How the counts were released, in words for the table's note: `kind` is "exact" or
    "perturbed", `text` the sentence (the bounds come from the result's `method`; a country's
    count is the sum of its nodes' counts, so its bound is D per node that answered)."""
    method = method or {"counts": "exact"}
    if method.get("counts") != "perturbed":
        return {
            "kind": "exact",
            "text": "exact: the counts are the nodes' true counts (a small count is suppressed).",
        }
    d = int(method.get("max_noise") or 0)
    pooled = method.get("pooled_max_noise")
    country = d * max(most_nodes, 1)
    some = int(method.get("perturbed_nodes") or 0)
    where = f" at {some} of the {answered} nodes that answered" if 0 < some < answered else ""
    text = (
        f"perturbed{where}: each country's count is within ±{country} of the truth"
        + (f", the total within ±{pooled}" if pooled is not None else "")
        + " (cell-key method: the same children always give the same count, no small count"
        " other than 0 is shown, and the total is perturbed on its own, so it need not equal"
        " the sum of the rows)."
    )
    return {"kind": "perturbed", "text": text}


async def study_context(
    request: Request, who: Signed, study_id: str, wait: float
) -> dict[str, Any]:
    hub = api(request, who)
    study = await hub.get(f"/api/studies/{study_id}", wait=wait)
    nodes = await hub.get("/api/nodes")
    done = study.get("status") in ("done", "failed")
    return {"study": study, "done": done, "table": count_table(study, nodes)}


# -- routes -------------------------------------------------------------------------------------
async def form_page(
    request: Request,
    who: Signed,
    filters: Filters,
    study_id: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    projects = count_projects(await api(request, who).get("/api/projects"))
    chosen = filters.single.get("project") or (projects[0]["project_id"] if projects else "")
    shown = await study_context(request, who, study_id, 0) if study_id else None
    return render(
        request,
        "feasibility.html",
        who,
        status_code=status_code,
        f=filters,
        projects=projects,
        chosen=chosen,
        error=error,
        shown=shown,
        study_id=study_id,
        unit_words=UNIT_WORDS,
        **choices(),
    )


@router.get(PATH, response_class=HTMLResponse)
async def feasibility_page(request: Request, who: Signed, study: str | None = None) -> HTMLResponse:
    need_page(who, PATH)
    values: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        values.setdefault(k, []).append(v)
    return await form_page(request, who, Filters.of(values), study_id=study)


@router.post(PATH, response_model=None)
async def run_feasibility(request: Request, who: Signed) -> Response:
    need_page(who, PATH)
    filters = Filters.of(await checked_multi(request, who))
    _, problems = filters.cohort()
    project = filters.single.get("project", "")
    if not project:
        problems.append("Choose the approved project the counts run under.")
    if problems:
        return await form_page(request, who, filters, error=" ".join(problems), status_code=422)
    try:
        submitted = await api(request, who).post(
            "/api/studies", json={"spec": study_spec(filters, project)}
        )
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        msg = f"The hub did not take this request: {exc.detail}"
        return await form_page(request, who, filters, error=msg, status_code=exc.status)
    query = urlencode([("study", submitted["id"])]) + "&" + filters.query()
    return RedirectResponse(f"{PATH}?{query}#counts", status_code=303)


@router.get(PATH + "/counts/{study_id}", response_class=HTMLResponse)
async def counts_fragment(request: Request, who: Signed, study_id: str) -> HTMLResponse:
    """The counts region alone (htmx swaps it in; it asks again while the study runs)."""
    need_page(who, PATH)
    shown = await study_context(request, who, study_id, WAIT_SECONDS)
    return render(request, "feasibility_counts.html", who, shown=shown, study_id=study_id)
