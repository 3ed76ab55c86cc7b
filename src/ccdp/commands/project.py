"""`ccdp project …` (a researcher requests, the board reviews, anyone shows their projects) and
`ccdp node projects …` (the custodian decides at the node; the hub only relays the decision;
the group joins `ccdp node` in commands/node.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ccdp.commands.options import AS_JSON, CACERT, HUB, NODE_TOKEN, STORE, hub_client

if TYPE_CHECKING:
    from ccdp.disclosure.registered_audit import AuditResult

project_app = typer.Typer(
    help="Projects (access requests): request, review (board), show, list.", no_args_is_help=True
)
node_projects_app = typer.Typer(
    help="The custodian's decisions on projects, made at the node and relayed to the hub.",
    no_args_is_help=True,
)

TOKEN = typer.Option(..., "--token", envvar="CCDP_TOKEN", help="User token (researcher/board).")
REASON = typer.Option(None, "--reason", help="Why (told to the researcher and the board).")


def _print_project(p: dict[str, Any]) -> None:
    typer.echo(f"{p['project_id']}: {p['state']} - {p['title']}")
    typer.echo(f"  requester: {p['requester']}")
    review = p.get("review") or {}
    if review.get("by"):
        typer.echo(
            f"  board: {review['by']}" + (f" ({review['reason']})" if review["reason"] else "")
        )
    terms = p["terms"]
    typer.echo(f"  data use: {json.dumps(terms['data_use'])}")
    typer.echo(f"  analyses: {', '.join(terms['analyses'])}; expires {terms['expires']}")
    if terms.get("cohort"):
        typer.echo(f"  scope: {json.dumps(terms['cohort'])}")
    for node, d in p["nodes"].items():
        typer.echo(
            f"  node {node}: {d['decision']}" + (f" ({d['reason']})" if d.get("reason") else "")
        )
    studies = p.get("studies") or []
    typer.echo(f"  registered studies: {len(studies) or 'none'}")
    new = set(p.get("not_accepted_here") or [])
    for st in studies:
        mark = "  [not accepted here]" if st["hash"] in new else ""
        spec = {k: v for k, v in st["spec"].items() if k != "title"}
        typer.echo(f"    {st['hash'][:12]}  {st['title']}{mark}")
        typer.echo(f"      {json.dumps(spec, default=str)}")


@project_app.command("request")
def request(
    file: Path = typer.Argument(..., help="Project file (YAML or JSON), see docs/governance.md."),
    hub: str = HUB,
    token: str = TOKEN,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Request a project (checked here first: errors name the file and key); the board reviews."""
    from ccdp.governance.projects import load_project

    spec = load_project(file)
    body = hub_client(hub, token, cacert)._call(
        "POST", "/api/projects", json={"spec": spec.model_dump(mode="json", exclude_unset=True)}
    )
    if as_json:
        typer.echo(json.dumps(body))
        return
    typer.echo(f"project requested ({body['state']}); id:\n{body['project_id']}")


@project_app.command("review")
def review(
    project_id: str = typer.Argument(..., help="The project's id."),
    approve: bool = typer.Option(False, "--approve", help="Approve the project."),
    reject: bool = typer.Option(False, "--reject", help="Reject the project (give --reason)."),
    reason: str | None = REASON,
    hub: str = HUB,
    token: str = typer.Option(..., "--token", envvar="CCDP_TOKEN", help="Board member's token."),
    cacert: Path | None = CACERT,
) -> None:
    """The board's decision on a requested project: --approve or --reject with a --reason."""
    if approve == reject:
        raise typer.BadParameter(
            "give exactly one of --approve or --reject", param_hint="--approve"
        )
    body = hub_client(hub, token, cacert)._call(
        "POST",
        f"/api/projects/{project_id}/review",
        json={"decision": "approve" if approve else "reject", "reason": reason},
    )
    typer.echo(f"project {body['project_id']}: {body['state']}")


@project_app.command("show")
def show(
    project_id: str = typer.Argument(..., help="The project's id."),
    hub: str = HUB,
    token: str = TOKEN,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """A project's state, its terms, the board's decision and each node's decision."""
    p = hub_client(hub, token, cacert)._call("GET", f"/api/projects/{project_id}")
    if as_json:
        typer.echo(json.dumps(p, indent=2))
        return
    _print_project(p)


@project_app.command("list")
def list_projects(
    hub: str = HUB, token: str = TOKEN, cacert: Path | None = CACERT, as_json: bool = AS_JSON
) -> None:
    """Projects this token may see (a researcher's own; the board's: all), oldest first."""
    rows = hub_client(hub, token, cacert)._call("GET", "/api/projects")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for p in rows:
        nodes = ", ".join(f"{n} {d['decision']}" for n, d in p["nodes"].items())
        typer.echo(f"{p['project_id']}  {p['state']:<9}  {p['title']}  [{nodes}]")


# ---- at the node ------------------------------------------------------------------------------
def _with_local(store: Path, p: dict[str, Any]) -> dict[str, Any]:
    """The hub's project with this node's decision, and which of its registered studies (hashed
    here, from the studies themselves) this node has not accepted: new, or changed since."""
    from ccdp.federation.node.projects import amendments, load_decisions
    from ccdp.governance.projects import ProjectSpec, ProjectTerms

    decisions = load_decisions(store)
    made = decisions.get(p["project_id"])
    local = None if made is None else made.model_dump(mode="json", exclude={"terms"})
    spec = ProjectSpec.model_validate(p["spec"])
    ours = ProjectTerms.of(p["project_id"], spec).studies
    studies = [
        {"title": st.get("title", "untitled study"), "hash": h, "spec": st}
        for st, h in zip(spec.study_specs(), ours, strict=True)
    ]
    return {
        **p,
        "studies": studies,
        "decided_here": local,
        "not_accepted_here": amendments(decisions, p["project_id"], ours),
    }


@node_projects_app.command("list")
def node_list(
    store: Path = STORE,
    hub: str = HUB,
    token: str = NODE_TOKEN,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Projects the hub relays that name this node, with what this node's custodian decided."""
    rows = [
        _with_local(store, p)
        for p in hub_client(hub, token, cacert)._call("GET", "/api/node/projects")
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for p in rows:
        here = p["decided_here"]["decision"] if p["decided_here"] else "not decided"
        typer.echo(f"{p['project_id']}  {p['state']:<9}  here: {here:<11}  {p['title']}")


@node_projects_app.command("show")
def node_show(
    project_id: str = typer.Argument(..., help="The project's id."),
    store: Path = STORE,
    hub: str = HUB,
    token: str = NODE_TOKEN,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """One project as the hub relays it (terms, lay summary), this node's decision, and the
    acceptance audit of its registered studies on this node's data (which studies combine to
    isolate a few records, and how many as a range; never who)."""
    from ccdp.federation.node.acceptance import describe

    p = _with_local(
        store, hub_client(hub, token, cacert)._call("GET", f"/api/node/projects/{project_id}")
    )
    lines: list[str] = []
    if store.exists() and p["spec"].get("studies"):
        result, notes = _audit(store, p["spec"])
        p["acceptance_audit"] = {**result.summary(), "notes": notes}
        lines = describe(result, notes)
    if as_json:
        typer.echo(json.dumps(p, indent=2))
        return
    _print_project(p)
    typer.echo(f"  summary: {p['spec']['summary']}")
    here = p["decided_here"]
    typer.echo(f"  decided here: {here['decision'] if here else 'not decided'}")
    for line in lines:
        typer.echo(f"  {line}")


def _audit(store: Path, spec: dict[str, Any]) -> tuple[AuditResult, list[str]]:
    """The acceptance audit of a project's registered studies on this node's store, with
    everything released before (federation/node/acceptance.py)."""
    from ccdp.federation.node.acceptance import acceptance_audit
    from ccdp.federation.node.local import LocalNode
    from ccdp.governance.projects import ProjectSpec

    return acceptance_audit(LocalNode(store), ProjectSpec.model_validate(spec))


def _decide(
    project_id: str,
    decision: str,
    reason: str | None,
    store: Path,
    hub: str,
    token: str,
    cacert: Path | None,
    despite_audit: bool = False,
) -> None:
    """Fetch the terms, audit the registered studies when accepting (nothing is accepted past
    a finding unless the custodian says so), record the decision at the node (what the node
    enforces), then tell the hub (which only relays it)."""
    from ccdp.federation.node.projects import NodeProjectsError, record_decision
    from ccdp.governance.projects import ProjectSpec, ProjectTerms

    if not store.exists():
        raise NodeProjectsError(f"{store}: no such node store")
    client = hub_client(hub, token, cacert)
    p = client._call("GET", f"/api/node/projects/{project_id}")
    if p["state"] != "approved":
        raise NodeProjectsError(
            f"project {project_id} is {p['state']}: a custodian decides only on approved projects"
        )
    terms = ProjectTerms.of(p["project_id"], ProjectSpec.model_validate(p["spec"]))
    audited: dict[str, Any] | None = None
    if decision == "accepted" and terms.studies:
        from ccdp.federation.node.acceptance import describe

        result, notes = _audit(store, p["spec"])
        for line in describe(result, notes):
            typer.echo(line)
        audited = {**result.summary(), "notes": notes, "accepted_despite": bool(result.findings)}
        if result.findings and not despite_audit:
            typer.echo(
                f"project {project_id}: not accepted. The audit found combinations of its "
                "registered studies that isolate a few records: decline it, ask the researcher "
                "for a change, or accept with --despite-audit (recorded in the audit log)."
            )
            raise typer.Exit(1)
    record_decision(store, terms, decision, reason, audit=audited)  # type: ignore[arg-type]
    client._call(
        "POST",
        f"/api/node/projects/{project_id}/decision",
        json={"decision": decision, "reason": reason},
    )
    typer.echo(f"project {project_id}: {decision} at this node (recorded here, sent to the hub)")
    if decision == "accepted":
        typer.echo(f"registered studies accepted: {len(terms.studies)} (their hashes recorded)")


@node_projects_app.command("accept")
def accept(
    project_id: str = typer.Argument(..., help="The project's id."),
    reason: str | None = REASON,
    store: Path = STORE,
    hub: str = HUB,
    token: str = NODE_TOKEN,
    cacert: Path | None = CACERT,
    despite_audit: bool = typer.Option(
        False,
        "--despite-audit",
        "--yes",
        help="Accept even though the acceptance audit found combinations that isolate records.",
    ),
) -> None:
    """Accept a board-approved project for this node: the acceptance audit runs first (its
    registered studies with everything released before); its terms are recorded here and every
    task of it is checked against them."""
    _decide(project_id, "accepted", reason, store, hub, token, cacert, despite_audit)


@node_projects_app.command("decline")
def decline(
    project_id: str = typer.Argument(..., help="The project's id."),
    reason: str | None = REASON,
    store: Path = STORE,
    hub: str = HUB,
    token: str = NODE_TOKEN,
    cacert: Path | None = CACERT,
) -> None:
    """Decline a project for this node (or withdraw an acceptance): its tasks are refused."""
    _decide(project_id, "declined", reason, store, hub, token, cacert)


def alerts(store: Path = STORE, as_json: bool = AS_JSON) -> None:
    """Disclosure alerts of this node: combinations of a project's releases that isolate a few
    records, found after each release (project, studies and a range; never who)."""
    from ccdp.federation.node.acceptance import alerts as read_alerts

    rows = read_alerts(store)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no disclosure alerts")
    for r in rows:
        if r.get("event") == "disclosure-detection-skipped":
            typer.echo(f"{r['time']}  project {r['project']}: detection skipped ({r['reason']})")
            continue
        for f in r.get("findings", []):
            typer.echo(
                f"{r['time']}  project {r['project']}: {', '.join(f['sources'])} "
                f"isolate {f['records']} records"
            )
