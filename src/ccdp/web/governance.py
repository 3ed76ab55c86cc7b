"""The Governance page: every project's state and each node's decision; for the board, the
pending requests with Approve and Reject; for the admin, the hub's audit log and its check.

For the board, also the nodes' disclosure alerts (which studies of a project combine to isolate a
few records; never who) and, per node, which registered studies its custodian accepted, as the
node reported them.

Everything comes from the hub's API with the signed-in person's token (`/api/projects`,
`/api/projects/{id}/review`, `/api/board/refusals`, `/api/board/alerts`, `/api/admin/audit`,
`/api/admin/audit/verify`),
so the API's own role checks decide who may do what; the page only leaves out what a role
cannot use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ccdp.report.html import shown_refusals
from ccdp.web.hubapi import ApiError
from ccdp.web.pages import Forbidden, Signed, api, checked_form, need_page, render
from ccdp.wire.data_use import DataUse

router = APIRouter()
PATH = "/governance"
AUDIT_LIMITS = (50, 200, 1000)
STATE_TAGS = {
    "requested": "warn",
    "approved": "good",
    "rejected": "bad",
    "expired": "bad",
    "closed": "",
}
DECISION_WORDS = {"accepted": "accepted", "declined": "declined", "not decided": "awaiting"}


# -- words for what the API returns ---------------------------------------------------------
def data_use_words(raw: dict[str, Any] | None) -> str:
    """A DUO data use as a sentence: 'disease specific research (DUO DS) on cancer
    (MONDO:0004992), not commercial', with the labels of the terminology files."""
    if not raw:
        return "not declared"
    from ccdp.terminology.duo import canonical, label
    from ccdp.terminology.mondo import mondo_diseases

    use = DataUse.model_validate(raw)
    ident = canonical(use.permission)
    text = f"{label(ident) if ident else use.permission} (DUO {use.permission})"
    if use.disease:
        names = dict(zip(mondo_diseases()["id"], mondo_diseases()["label"], strict=True))
        text += f" on {names.get(use.disease, 'the disease')} ({use.disease})"
    text += ", commercial" if use.commercial else ", not commercial"
    if use.meets:
        met = []
        for code in use.meets:
            term = canonical(code)
            met.append(f"{label(term) if term else code} ({code})")
        text += "; meets: " + ", ".join(met)
    return text


def scope_words(cohort: dict[str, Any] | None) -> str:
    """A project's cohort scope in words ('every child' when it has none)."""
    if not cohort:
        return "every child the nodes hold (no cohort restriction)"
    parts = []
    for name, cond in cohort.items():
        if isinstance(cond, dict):
            lo, hi = cond.get("from"), cond.get("to")
            value = f"{lo if lo is not None else '…'} to {hi if hi is not None else '…'}"
        elif isinstance(cond, list):
            value = " or ".join(str(v) for v in cond)
        else:
            value = str(cond)
        parts.append(f"{name.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def study_params_words(spec: dict[str, Any]) -> str:
    """A registered study's parameters beyond analysis and cohort, in short ('outcome os; by
    sex'), for the board and the custodians to read."""
    skip = {"title", "description", "analysis", "cohort", "nodes", "min_nodes", "timeout"}
    skip |= {"project", "data_use"}
    parts = []
    for key, value in spec.items():
        if key in skip or value in (None, [], {}):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return "; ".join(parts) or "–"


def studies_view(p: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's registered studies as the page lists them: title, analysis, cohort in
    words, the other parameters, and the hash (short form; the full one in a title)."""
    out = []
    for st in p.get("studies") or []:
        spec = st.get("spec") or {}
        out.append(
            {
                "title": st.get("title") or "untitled study",
                "analysis": spec.get("analysis") or "?",
                "cohort": scope_words(spec.get("cohort")),
                "params": study_params_words(spec),
                "hash": st.get("hash") or "",
                "short": (st.get("hash") or "")[:12],
            }
        )
    return out


def studies_accepted_words(
    decision: str | None, studies: int, reported: dict[str, Any] | None = None
) -> str:
    """What the hub knows of the study list a node accepted: what the node reported of its own
    record (the hashes its custodian accepted, `reported`), else inferred from the relayed
    decision (`ccdp node projects accept` records every study the hub lists). The node's own
    record is the authority: it checks every task against it."""
    if not studies:
        return "no registered studies"
    if reported is not None:
        accepted = len(reported.get("accepted") or [])
        if reported.get("decision") == "declined":
            return "none (declined at the node)"
        if accepted == studies:
            return f"all {studies}, as the node reported"
        return f"{accepted} of {studies}, as the node reported"
    if decision == "accepted":
        return f"all {studies} (inferred: the node has not reported its record yet)"
    if decision == "declined":
        return "none (declined)"
    return "not yet"


def study_marks(p: dict[str, Any], reported: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per registered study, whether the node reported it accepted (empty when it reported
    nothing): the page lists them under the node's decision."""
    if reported is None:
        return []
    accepted = set(reported.get("accepted") or [])
    return [
        {
            "title": st.get("title") or "untitled study",
            "hash": st.get("hash") or "",
            "short": (st.get("hash") or "")[:12],
            "accepted": st.get("hash") in accepted,
        }
        for st in p.get("studies") or []
    ]


def alert_rows(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes' alerts as table rows, one per finding (a skipped detection is one row):
    when, node, project, the release after which it was found, the studies that combine (by
    title, the hub's own), how many records as a range."""

    def named(st: dict[str, Any] | None) -> str:
        if not st:
            return "–"
        if st.get("known") and st.get("title"):
            return str(st["title"])
        return f"study {st.get('study_id')} (not a study of this project at the hub)"

    rows: list[dict[str, Any]] = []
    for a in alerts:
        base = {
            "at": a.get("detected_at"),
            "node": a.get("node"),
            "project": a.get("project_title") or a.get("project"),
            "project_id": a.get("project"),
            "after": named(a.get("study")),
        }
        if a.get("kind") == "detection-skipped":
            what = f"detection skipped: more than {a.get('limit')} released sets"
            rows.append({**base, "studies": [], "records": "–", "what": what})
            continue
        for f in a.get("findings") or []:
            others = f.get("others") or 0
            rows.append(
                {
                    **base,
                    "studies": [named(st) for st in f.get("studies") or []]
                    + ([f"{others} other release(s)"] if others else []),
                    "records": f.get("records"),
                    "what": "an integer combination" if f.get("integer") else "a combination",
                }
            )
        if a.get("more"):
            rows.append({**base, "studies": [], "records": "–", "what": f"{a['more']} more"})
    return rows


def project_view(p: dict[str, Any]) -> dict[str, Any]:
    spec = p.get("spec") or {}
    terms = p.get("terms") or {}
    nodes = [
        {
            "name": name,
            "decision": d.get("decision"),
            "word": DECISION_WORDS.get(d.get("decision") or "", d.get("decision") or "awaiting"),
            "reason": d.get("reason"),
            "at": d.get("at"),
            "studies": studies_accepted_words(
                d.get("decision"), len(p.get("studies") or []), d.get("reported")
            ),
            "marks": study_marks(p, d.get("reported")),
            "other": len((d.get("reported") or {}).get("other") or []),
        }
        for name, d in (p.get("nodes") or {}).items()
    ]
    return {
        **p,
        "summary": spec.get("summary"),
        "institution": spec.get("institution"),
        "data_use_words": data_use_words(terms.get("data_use") or spec.get("data_use")),
        "scope_words": scope_words(terms.get("cohort") or spec.get("cohort")),
        "analyses": terms.get("analyses") or spec.get("analyses") or [],
        "expires": terms.get("expires") or spec.get("expires"),
        "node_rows": nodes,
        "study_rows": studies_view(p),
        "accepted": sum(n["decision"] == "accepted" for n in nodes),
        "tag": STATE_TAGS.get(p.get("state") or "", ""),
    }


# -- pages ----------------------------------------------------------------------------------
async def governance_context(request: Request, who: Signed) -> dict[str, Any]:
    hub = api(request, who)
    projects = [project_view(p) for p in await hub.get("/api/projects")]
    pending = [p for p in projects if p["state"] == "requested"]
    others = [p for p in projects if p["state"] != "requested"]
    refusals: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    if who.role in ("board", "admin"):
        shown = shown_refusals(await hub.get("/api/board/refusals"))
        refusals = list(reversed(shown))[:20]  # newest first
        alerts = alert_rows(await hub.get("/api/board/alerts", limit=50))  # newest first
    return {"pending": pending, "others": others, "refusals": refusals, "alerts": alerts}


async def governance_render(
    request: Request,
    who: Signed,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    ctx = await governance_context(request, who)
    return render(request, "governance.html", who, status_code=status_code, **ctx, **extra)


@router.get(PATH, response_class=HTMLResponse)
async def governance_page(
    request: Request,
    who: Signed,
    reviewed: str | None = Query(None, max_length=64),
    requested: str | None = Query(None, max_length=64),
) -> HTMLResponse:
    need_page(who, PATH)
    notice = None
    if reviewed or requested:
        try:
            got = reviewed or requested or ""
            p = await api(request, who).get(f"/api/projects/{quote(got, safe='')}")
            studies = len(p.get("studies") or [])
            notice = (
                f"“{p['title']}” is now {p['state']}."
                if reviewed
                else f"“{p['title']}” is requested with {studies} registered "
                f"stud{'y' if studies == 1 else 'ies'}: the board reviews it next."
            )
        except ApiError:
            notice = None
    return await governance_render(request, who, notice=notice, reviewed=reviewed)


@router.post(PATH + "/projects/{project_id}/review", response_model=None)
async def review_project(request: Request, who: Signed, project_id: str) -> Response:
    """The board's Approve or Reject (with its reason), sent to the API's review route."""
    need_page(who, PATH)
    form = await checked_form(request, who)
    if who.role != "board":
        raise Forbidden(f"only the board reviews projects, not the {who.role} role")
    decision = form.get("decision")
    reason = (form.get("reason") or "").strip() or None
    errors = {}
    if decision not in ("approve", "reject"):
        errors[project_id] = "Choose Approve or Reject."
    elif decision == "reject" and not reason:
        errors[project_id] = "A rejection must give its reason: write it in the Reason box."
    if not errors:
        try:
            await api(request, who).post(
                f"/api/projects/{quote(project_id, safe='')}/review",
                json={"decision": decision, "reason": reason},
            )
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            errors[project_id] = f"The hub refused this review: {exc.detail}"
    if errors:
        return await governance_render(
            request, who, status_code=422, errors=errors, reasons={project_id: reason or ""}
        )
    target = f"{PATH}?reviewed={quote(project_id, safe='')}#project-{quote(project_id, safe='')}"
    return RedirectResponse(target, status_code=303)


@router.get(PATH + "/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    who: Signed,
    limit: int = Query(AUDIT_LIMITS[0], ge=1, le=5000),
    verify: bool = False,
) -> HTMLResponse:
    """The hub's audit log, newest first, and (on request) the check of its whole chain."""
    need_page(who, PATH)
    if who.role != "admin":
        raise Forbidden("only the admin reads the hub's audit log")
    hub = api(request, who)
    records = await hub.get("/api/admin/audit", limit=limit)
    verified = await hub.get("/api/admin/audit/verify") if verify else None
    return render(
        request,
        "audit.html",
        who,
        records=records,
        limit=limit,
        limits=AUDIT_LIMITS,
        verified=verified,
    )


@router.get(PATH + "/audit/verify", response_class=HTMLResponse)
async def audit_verify_fragment(request: Request, who: Signed) -> HTMLResponse:
    """The chain check alone (htmx swaps it into the audit page)."""
    need_page(who, PATH)
    if who.role != "admin":
        raise Forbidden("only the admin verifies the hub's audit log")
    verified = await api(request, who).get("/api/admin/audit/verify")
    return render(request, "audit_verify.html", who, verified=verified)
