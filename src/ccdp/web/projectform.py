"""The project request form (Governance → Request a project): a researcher's project with its
data use, analyses, nodes, scope, expiry and its registered studies, posted to `/api/projects`.

Studies come from two places: YAML pasted in the form (one study spec per YAML document, the
form `ccdp submit` takes, documents separated by a line `---`), and the registered studies of
the researcher's own projects, picked by box. The hub checks the whole project as
`ccdp project request` does (`load_project`); the form only turns fields into that dict and says
what it could not read (422), so a bad form is never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ccdp.analyses import registry
from ccdp.web.hubapi import ApiError
from ccdp.web.pages import Forbidden, Signed, api, checked_multi, need_page, render

router = APIRouter()
PATH = "/governance/request"
PERMISSIONS = (
    ("DS", "disease specific research (DUO DS)"),
    ("HMB", "health or medical or biomedical research (DUO HMB)"),
    ("GRU", "general research use (DUO GRU)"),
)
CANCER = "MONDO:0004992"
MAX_STUDIES_TEXT = 100_000


@dataclass
class Built:
    """The project dict the form makes, or the problems that stop it."""

    spec: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[-1].strip()


def own_studies(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The registered studies of the researcher's projects, each with the key its box sends
    (`project id:index`) and the spec as the hub keeps it."""
    out = []
    for p in projects:
        for i, st in enumerate(p.get("studies") or []):
            out.append(
                {
                    "key": f"{p['project_id']}:{i}",
                    "title": st.get("title") or "untitled study",
                    "project": p.get("title") or p["project_id"],
                    "analysis": (st.get("spec") or {}).get("analysis") or "?",
                    "short": (st.get("hash") or "")[:12],
                    "spec": st.get("spec") or {},
                }
            )
    return out


def pasted_studies(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The study specs pasted in the form: each YAML document a study (or a list of them)."""
    if not text.strip():
        return [], []
    if len(text) > MAX_STUDIES_TEXT:
        return [], [f"Studies: the YAML is longer than {MAX_STUDIES_TEXT:,} characters."]
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        return [], [f"Studies: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}."]
    studies: list[dict[str, Any]] = []
    for n, doc in enumerate(docs, start=1):
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                return [], [f"Studies: document {n} is not a study spec (a mapping of keys)."]
            studies.append(item)
    return studies, []


def build_project(form: dict[str, list[str]], picked_from: list[dict[str, Any]]) -> Built:
    """The project dict for `/api/projects` from the form's fields."""
    problems: list[str] = []
    permission = one(form, "permission") or "DS"
    data_use: dict[str, Any] = {
        "permission": permission,
        "commercial": bool(one(form, "commercial")),
    }
    if permission == "DS":
        data_use["disease"] = one(form, "disease") or CANCER
    spec: dict[str, Any] = {
        "title": one(form, "title"),
        "summary": one(form, "summary"),
        "institution": one(form, "institution"),
        "data_use": data_use,
        "nodes": form.get("nodes") or [],
        "analyses": form.get("analyses") or [],
        "expires": one(form, "expires"),
    }
    for key, label in (("title", "Title"), ("summary", "Summary"), ("institution", "Institution")):
        if not spec[key]:
            problems.append(f"{label}: required.")
    if not spec["nodes"]:
        problems.append("Nodes: choose at least one node to ask.")
    if not spec["analyses"]:
        problems.append("Analyses: choose at least one analysis the project may run.")
    try:
        date.fromisoformat(spec["expires"])
    except ValueError:
        problems.append("Expires: a date (YYYY-MM-DD).")
    groups = form.get("iccc_group") or []
    if groups:
        spec["cohort"] = {"iccc_group": groups}
    pasted, bad = pasted_studies(one(form, "studies_yaml"))
    problems += bad
    by_key = {s["key"]: s["spec"] for s in picked_from}
    picked = []
    for key in form.get("copy") or []:
        if key not in by_key:
            problems.append("Studies: a study picked from your projects is no longer there.")
        else:
            picked.append(by_key[key])
    spec["studies"] = [*picked, *pasted]
    return Built(spec, problems)


async def form_page(
    request: Request,
    who: Signed,
    form: dict[str, list[str]],
    problems: list[str] | None = None,
    error: ApiError | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    hub = api(request, who)
    nodes = [n["name"] for n in await hub.get("/api/nodes") if not n.get("revoked")]
    projects = await hub.get("/api/projects")
    from ccdp.web.feasibility import iccc_choices

    return render(
        request,
        "project_request.html",
        who,
        status_code=status_code,
        form=form,
        one=lambda k: one(form, k),
        many=lambda k: form.get(k, []),
        permissions=PERMISSIONS,
        analyses=registry.names(),
        nodes=nodes,
        groups=iccc_choices()[0],
        studies=own_studies(projects),
        problems=problems or [],
        error=error,
    )


def fresh_form() -> dict[str, list[str]]:
    expires = (date.today() + timedelta(days=365)).isoformat()
    return {"permission": ["DS"], "disease": [CANCER], "expires": [expires]}


def need_researcher(who: Signed) -> None:
    need_page(who, "/governance")
    if who.role not in ("researcher", "admin"):
        raise Forbidden(f"only a researcher requests a project, not the {who.role} role")


@router.get(PATH, response_class=HTMLResponse)
async def request_page(request: Request, who: Signed) -> HTMLResponse:
    need_researcher(who)
    return await form_page(request, who, fresh_form())


@router.post(PATH, response_model=None)
async def request_project(request: Request, who: Signed) -> Response:
    need_researcher(who)
    form = await checked_multi(request, who)
    hub = api(request, who)
    built = build_project(form, own_studies(await hub.get("/api/projects")))
    if built.problems:
        return await form_page(request, who, form, problems=built.problems, status_code=422)
    try:
        made = await hub.post("/api/projects", json={"spec": built.spec})
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        status = exc.status if 400 <= exc.status < 500 else 422
        return await form_page(request, who, form, error=exc, status_code=status)
    pid = quote(made["project_id"], safe="")
    return RedirectResponse(f"/governance?requested={pid}#project-{pid}", status_code=303)
