"""The Studies page: a researcher's projects and studies, the New study form, a study's result.

Every fact comes from the hub's API as the signed-in person (`/api/projects`, `/api/nodes`,
`/api/studies`, `/api/studies/{id}`); the form builds the spec in `studyform`, the result's tables
and figures come from `web.plots` (the report stage's code). Downloads (JSON, CSV, SVG, PNG) are
routes of the dashboard under the session cookie, and they too read only the API.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ccdp.analyses import registry
from ccdp.errors import CcdpError
from ccdp.web import plots, studyform
from ccdp.web.hubapi import ApiError
from ccdp.web.pages import Signed, api, checked_multi, error_page, need_page, render

router = APIRouter()
FINISHED = ("done", "failed")
POLL = "every 2s"
# an SVG opened by itself is a document: its own policy (matplotlib styles inline, no script)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
# how a form error the API gave is shown: the statuses of a spec or a project refusal
FORM_ERRORS = (400, 404, 409, 422)
ANALYSIS_TEXT = {
    "count": "counts of tumours, patients or available specimens, by up to 3 variables",
    "crosstab": "a cross-table of counts with margins",
    "incidence": "incidence rates per million, age-standardised, with CIs",
    "km": "Kaplan–Meier survival curves with the number at risk",
    "logrank": "log-rank test between groups",
    "cox": "Cox proportional-hazards model (hazard ratios)",
    "logistic": "logistic regression (odds ratios) of a 0/1 outcome",
    "poisson": "Poisson regression (rate ratios)",
}


async def projects_of(request: Request, who: Signed) -> list[dict[str, Any]]:
    return list(await api(request, who).get("/api/projects"))


def approved(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in projects if p.get("state") == "approved"]


async def node_names(request: Request, who: Signed) -> list[str]:
    nodes = await api(request, who).get("/api/nodes")
    return [n["name"] for n in nodes if not n.get("revoked")]


def status_tone(status: str) -> str:
    return {"done": "good", "failed": "bad", "running": "warn"}.get(status, "")


@router.get("/studies", response_class=HTMLResponse)
async def studies_page(request: Request, who: Signed) -> HTMLResponse:
    need_page(who, "/studies")
    projects = await projects_of(request, who)
    titles = {p["project_id"]: p["title"] for p in projects}
    studies = list(reversed(await api(request, who).get("/api/studies")))  # newest first
    return render(
        request,
        "studies.html",
        who,
        projects=projects,
        studies=studies,
        titles=titles,
        tone=status_tone,
    )


# ---- the New study form ------------------------------------------------------------------
def default_form(
    project: str | None, projects: list[dict[str, Any]], nodes: list[str]
) -> dict[str, list[str]]:
    """A fresh form: the project asked for (else the first approved), KM of OS, every node."""
    ok = approved(projects)
    chosen = project or (ok[0]["project_id"] if ok else "")
    return {
        "project": [chosen],
        "analysis": ["km"],
        "outcome": ["os"],
        "nodes": list(nodes),
    }


async def form_page(
    request: Request,
    who: Signed,
    form: dict[str, list[str]],
    built: studyform.Built | None = None,
    error: ApiError | None = None,
    problems: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    projects = await projects_of(request, who)
    nodes = await node_names(request, who)
    built = built or studyform.build_spec(form, nodes)
    return render(
        request,
        "studies_new.html",
        who,
        status_code=status_code,
        form=form,
        one=lambda k: studyform.one(form, k),
        many=lambda k: form.get(k, []),
        projects=approved(projects),
        others=[p for p in projects if p.get("state") != "approved"],
        analyses=[(a, ANALYSIS_TEXT.get(a, a)) for a in registry.names()],
        params={a: studyform.analysis_params(a) for a in registry.names()},
        outcomes=studyform.SURVIVAL_OUTCOMES,
        units=studyform.UNITS[1:],  # tumours is the default option
        groups=studyform.group_variables(),
        iccc_groups=studyform.iccc_groups(),
        nodes=nodes,
        preview=preview_context(built),
        error=error,
        problems=problems or [],
    )


def preview_context(built: studyform.Built) -> dict[str, Any]:
    """The YAML the form will submit, what it left out, and whether the spec reads as valid
    (the same check the hub makes first; the project's terms are the hub's to check)."""
    from ccdp.federation.study import load_study

    check = None
    if not built.problems:
        try:
            load_study(built.spec)
        except CcdpError as exc:
            check = str(exc)
    return {"yaml": built.yaml(), "notes": built.notes, "problems": built.problems, "check": check}


@router.get("/studies/new", response_class=HTMLResponse)
async def new_study(request: Request, who: Signed, project: str | None = None) -> HTMLResponse:
    need_page(who, "/studies")
    projects = await projects_of(request, who)
    nodes = await node_names(request, who)
    return await form_page(request, who, default_form(project, projects, nodes))


@router.post("/studies/new", response_class=HTMLResponse)
async def post_study(request: Request, who: Signed) -> Response:
    """Preview (the page again, with the YAML) or Submit (POST /api/studies, then the study)."""
    need_page(who, "/studies")
    form = await checked_multi(request, who)
    nodes = await node_names(request, who)
    built = studyform.build_spec(form, nodes)
    if studyform.one(form, "action") != "submit":
        return await form_page(request, who, form, built)
    if built.problems:
        return await form_page(request, who, form, built, problems=built.problems, status_code=422)
    try:
        made = await api(request, who).post("/api/studies", json={"spec": built.spec})
    except ApiError as exc:
        if exc.status not in FORM_ERRORS:
            raise
        return await form_page(request, who, form, built, error=exc, status_code=exc.status)
    return RedirectResponse(f"/studies/{made['id']}", status_code=303)


@router.post("/studies/preview", response_class=HTMLResponse)
async def preview(request: Request, who: Signed) -> HTMLResponse:
    """The preview fragment (htmx swaps it in as the form changes)."""
    need_page(who, "/studies")
    form = await checked_multi(request, who)
    built = studyform.build_spec(form, await node_names(request, who))
    return render(request, "studies_preview.html", who, preview=preview_context(built))


# ---- one study -----------------------------------------------------------------------------
async def study_record(request: Request, who: Signed, study_id: str) -> dict[str, Any]:
    need_page(who, "/studies")
    return dict(await api(request, who).get(f"/api/studies/{study_id}"))


def method_text_of(result: Any) -> str:
    """The result's method note (`ccdp.analyses.event_data.noted`), empty when it has none."""
    from ccdp.analyses.event_data import noted

    return noted(result)


def study_context(record: dict[str, Any], titles: dict[str, str]) -> dict[str, Any]:
    import yaml

    result = plots.rebuilt(record)
    tables = plots.result_tables(result) if result is not None else []
    out = record.get("result") or {}
    spec = record.get("spec")
    return {
        "s": record,
        "finished": record["status"] in FINISHED,
        # done without a result (too few nodes answered) is not a success
        "tone": "warn"
        if record["status"] == "done" and result is None
        else status_tone(record["status"]),
        "project_title": titles.get(record.get("project") or "", record.get("project")),
        "nodes": plots.node_rows(record),
        "result": result,
        "tables": tables,
        "default_table": plots.default_table(tables).key if tables else None,
        "note": plots.has_dash(tables, result) if result is not None else "",
        # the result's method note in words: times exact or grouped, excluded nodes, n
        "method_lines": method_text_of(result).splitlines() if result is not None else [],
        "figures": plots.result_figures(result, record),
        "error": record.get("error") or out.get("error"),
        "no_result": record["status"] in FINISHED and result is None,
        "min_nodes_met": out.get("min_nodes_met"),
        "spec_yaml": yaml.safe_dump(spec, sort_keys=False).strip() if spec else "",
        "poll": POLL,
    }


async def titles_of(request: Request, who: Signed) -> dict[str, str]:
    return {p["project_id"]: p["title"] for p in await projects_of(request, who)}


@router.get("/studies/{study_id}", response_class=HTMLResponse)
async def study_page(request: Request, who: Signed, study_id: str) -> HTMLResponse:
    record = await study_record(request, who, study_id)
    ctx = await run_in_threadpool(study_context, record, await titles_of(request, who))
    return render(request, "studies_study.html", who, **ctx)


@router.get("/studies/{study_id}/part", response_class=HTMLResponse)
async def study_part(request: Request, who: Signed, study_id: str) -> HTMLResponse:
    """The study's status, nodes and result: what the page polls (htmx) until it is finished."""
    record = await study_record(request, who, study_id)
    ctx = await run_in_threadpool(study_context, record, await titles_of(request, who))
    return render(request, "studies_body.html", who, **ctx)


def attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@router.get("/studies/{study_id}/result.json")
async def result_json(request: Request, who: Signed, study_id: str) -> Response:
    """The study as the API gives it (status, nodes, result), to save."""
    record = await study_record(request, who, study_id)
    body = json.dumps(record, indent=2, ensure_ascii=False)
    return Response(
        body,
        media_type="application/json",
        headers=attachment(f"study-{study_id[:12]}.json"),
    )


@router.get("/studies/{study_id}/result.csv")
async def result_csv(
    request: Request, who: Signed, study_id: str, table: str | None = None
) -> Response:
    """One of the result's tables as CSV (`table`: summary, at_risk, curves, data, result;
    without it, the full data table)."""
    record = await study_record(request, who, study_id)
    result = plots.rebuilt(record)
    if result is None:
        return error_page(request, who, 404, f"study {study_id} has no result (yet)")
    tables = await run_in_threadpool(plots.result_tables, result)
    keys = [t.key for t in tables]
    chosen = plots.default_table(tables) if table is None else None
    chosen = chosen or next((t for t in tables if t.key == table), None)
    if chosen is None:
        return error_page(
            request, who, 404, f"this result has no table {table!r}; it has {', '.join(keys)}"
        )
    return Response(
        chosen.csv(),
        media_type="text/csv; charset=utf-8",
        headers=attachment(f"study-{study_id[:12]}-{chosen.key}.csv"),
    )


@router.get("/studies/{study_id}/plots/{name}")
async def study_plot(request: Request, who: Signed, study_id: str, name: str) -> Response:
    """Figure n of the result: `/plots/0.svg` or `/plots/0.png`."""
    stem, _, fmt = name.partition(".")
    if fmt not in ("svg", "png") or not stem.isdigit():
        return error_page(request, who, 404, f"no plot {name!r}: use N.svg or N.png")
    record = await study_record(request, who, study_id)
    result = plots.rebuilt(record)
    if result is None:
        return error_page(request, who, 404, f"study {study_id} has no result (yet)")
    try:
        body = await run_in_threadpool(plots.draw, result, int(stem), fmt)
    except IndexError:
        return error_page(request, who, 404, f"this result has no plot {stem}")
    headers = {} if fmt == "png" else {"Content-Security-Policy": SVG_CSP}
    if request.query_params.get("download"):
        headers |= attachment(f"study-{study_id[:12]}-plot{stem}.{fmt}")
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(body, media_type=media, headers=headers)
