"""`ccdp hub …` (serve, add-node, add-user, revoke, import, tasks, audit, refusals, alerts),
`ccdp submit` and `ccdp study list|show|result`: a researcher's view of the studies at a hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from ccdp.commands.options import AS_JSON, CACERT, HUB, TOKEN_FILE, hub_client, the_token

hub_app = typer.Typer(help="The coordinating hub: serve, register nodes and users.")

DB = typer.Option(
    None,
    "--db",
    help="Database URL: sqlite:///hub.db (default, or $CCDP_HUB_DB) or postgresql+psycopg://…",
)


def _db(url: str | None) -> str:
    from ccdp.federation.hub.db import DEFAULT_DB

    return url or os.environ.get("CCDP_HUB_DB") or DEFAULT_DB


AUDIT_KEY = typer.Option(
    None,
    "--audit-key",
    envvar="CCDP_HUB_AUDIT_KEY",
    help="File of the hub's audit-log key (created 0600 on first start). Default: beside a "
    "SQLite database (hub.db -> hub.audit.key), else ~/.config/ccdp/hub-audit/<database>.key.",
)


def _hub(url: str | None, audit_key: Path | None = None):
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database

    return Hub(open_database(_db(url), audit_key))


@hub_app.command("serve")
def serve(
    db: str | None = DB,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."
    ),
    port: int = typer.Option(8700, "--port", help="TCP port to listen on."),
    certfile: Path | None = typer.Option(None, "--certfile", help="TLS certificate (PEM)."),
    keyfile: Path | None = typer.Option(None, "--keyfile", help="TLS private key (PEM)."),
    max_body_mib: float = typer.Option(
        1.0,
        "--max-body-mib",
        min=0.001,
        help="Largest request body in MiB (study specs, heartbeats, admin requests); "
        "a larger one is refused with 413 before it is read.",
    ),
    max_answer_mib: float = typer.Option(
        16.0,
        "--max-answer-mib",
        min=0.001,
        help="Largest node answer or imported result file in MiB (event-time tables of "
        "large cohorts need more than a study spec); a larger one is refused with 413.",
    ),
    open_studies: bool = typer.Option(
        False,
        "--open",
        help="Also run studies that name no project (tests, demos); by default the hub runs "
        "only studies of a project the board approved and the nodes accepted.",
    ),
    audit_key: Path | None = AUDIT_KEY,
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Worker processes sharing the port (PostgreSQL only: they share sign-ins, study "
        "leases and wake-ups through the database; a SQLite hub runs one).",
    ),
    study_lease: float = typer.Option(
        15.0,
        "--study-lease",
        min=0.5,
        help="Seconds a worker's claim on a study lasts unless renewed: a killed worker's "
        "studies are taken over by another worker this long after it died.",
    ),
) -> None:
    """Serve the hub's API (OpenAPI docs at /docs) until interrupted."""
    from ccdp.federation.hub.server import serve as run
    from ccdp.federation.hub.wirecheck import MiB
    from ccdp.web.dashboard import mount_dashboard

    run(
        _db(db),
        host=host,
        port=port,
        certfile=certfile,
        keyfile=keyfile,
        log_level="warning",
        max_body=int(max_body_mib * MiB),
        max_answer_body=int(max_answer_mib * MiB),
        open_studies=open_studies,
        audit_key=audit_key,
        dashboard=mount_dashboard,
        workers=workers,
        study_lease=study_lease,
    )


@hub_app.command("wait")
def wait_hub(
    url: str = typer.Argument(..., help="The hub's URL, e.g. http://127.0.0.1:8700"),
    timeout: float = typer.Option(
        30, "--timeout", min=0, help="Give up after S seconds (exit 2 with one line)."
    ),
    cacert: Path | None = CACERT,
) -> None:
    """Wait until the hub at URL answers: a script that starts `ccdp hub serve &` runs this
    before its first command that talks to the hub."""
    from ccdp.federation.client import tls_verify, wait_for_hub

    took = wait_for_hub(url, timeout, tls_verify(cacert))
    typer.echo(f"hub at {url} answers (after {took:.1f} s)")


@hub_app.command("add-node")
def add_node(
    name: str = typer.Argument(..., help="The node's name (studies name nodes by it)."),
    country: str = typer.Option(..., "--country", help="ISO 3166 two-letter code."),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="Ed25519 public key (PEM) that signs the node's result files."
    ),
    db: str | None = DB,
) -> None:
    """Register a node; its token is printed once, on the last line."""
    pem = public_key.read_text(encoding="utf-8") if public_key else None
    token = _hub(db).add_node(name, country, pem)
    typer.echo(f"node {name} ({country.upper()}) registered; its token (shown only now):")
    typer.echo(token)


@hub_app.command("add-user")
def add_user(
    name: str = typer.Argument(...),
    role: str = typer.Option(
        "researcher",
        "--role",
        help="researcher (requests projects, runs studies), board (the data access committee: "
        "reviews projects), admin (runs the hub, creates trials), statistician (sees a trial's "
        "allocations and seed) or expert (a member of the expert board: reads referrals, "
        "records recommendations)",
    ),
    db: str | None = DB,
) -> None:
    """Register a researcher, board member, admin, statistician or expert; the token is
    printed once, on the last line."""
    token = _hub(db).add_user(name, role)
    typer.echo(f"user {name} ({role}) registered; their token (shown only now):")
    typer.echo(token)


@hub_app.command("revoke-node")
def revoke_node(name: str = typer.Argument(...), db: str | None = DB) -> None:
    """Revoke a node's token: the node's next request gets 401."""
    _hub(db).revoke("node", name)
    typer.echo(f"node {name}: token revoked")


@hub_app.command("revoke-user")
def revoke_user(name: str = typer.Argument(...), db: str | None = DB) -> None:
    """Revoke a user's token."""
    _hub(db).revoke("user", name)
    typer.echo(f"user {name}: token revoked")


@hub_app.command("set-key")
def set_key(
    name: str = typer.Argument(..., help="Node name."),
    public_key: Path = typer.Argument(..., help="Ed25519 public key (PEM)."),
    db: str | None = DB,
) -> None:
    """Register the Ed25519 public key that verifies a node's result files."""
    _hub(db).set_public_key(name, public_key.read_text(encoding="utf-8"))
    typer.echo(f"node {name}: signing key registered")


@hub_app.command("nodes")
def nodes(
    db: str | None = DB, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Registered nodes with their last-seen time and last audit head (and any alert)."""
    from rich.console import Console
    from rich.table import Table

    rows = _hub(db).nodes()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    cols = ("name", "country", "last_seen", "revoked", "signing_key")
    table = Table(title="nodes")
    for col in (*cols, "audit_head", "audit_alert"):
        table.add_column(col, overflow="fold")
    for n in rows:
        head = n["audit_head"]
        shown = f"{head['seq']} {head['hash'][:12]}" if head else "none"
        table.add_row(
            *(str(n[c]) if n[c] is not None else "never" for c in cols),
            shown,
            n["audit_alert"] or "",
        )
    console = Console()
    if not console.is_terminal:  # piped: do not fold hashes and alerts into 80 columns
        console = Console(width=200)
    console.print(table)


@hub_app.command("tasks")
def tasks(
    node: str = typer.Argument(..., help="The offline node."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for the task files."),
    db: str | None = DB,
) -> None:
    """Write a node's open tasks as task files (for a site without a connection)."""
    hub = _hub(db)
    node_id, _, _ = hub.node_of_name(node)
    out.mkdir(parents=True, exist_ok=True)
    for task in hub.pending_tasks(node_id, redeliver=True):
        path = out / f"task-{task.task_id}.json"
        body = {"format": "ccdp-task/1", "node": node, "task": task.model_dump(mode="json")}
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        typer.echo(str(path))


@hub_app.command("import")
def import_result(
    resultfile: Path = typer.Argument(..., help="A signed result file from `ccdp node answer`."),
    db: str | None = DB,
) -> None:
    """Take in an offline site's signed result file (verified before it is recorded)."""
    from ccdp.federation import resultfile as rfmod
    from ccdp.federation.hub.app import import_file

    rec = import_file(_hub(db), rfmod.read(resultfile))
    typer.echo(f"{resultfile}: task {rec.task_id} {rec.status}")


@hub_app.command("audit")
def audit(
    db: str | None = DB,
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Check the whole chain, its head row and head file; exit 1 naming the first bad seq.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON: the records as JSON lines, or the --verify outcome."
    ),
    limit: int = typer.Option(
        0, "--limit", min=0, help="Only the latest N records (0: all); not with --verify."
    ),
    audit_key: Path | None = AUDIT_KEY,
) -> None:
    """The hub's audit log (on the hub's machine, from its database): every request, decision,
    study, answer, result read, token issued or revoked; --verify checks nothing was edited,
    removed, reordered or cut off."""
    from ccdp.federation.hub import audit as hub_audit

    hub = _hub(db, audit_key)
    if verify:
        outcome = hub.verify_audit()
        if as_json:
            typer.echo(json.dumps(outcome.to_json(), indent=2))
        elif outcome.ok:
            head_file = hub_audit.chain_of(hub.sessions).head_path
            typer.echo(
                f"hub audit log intact: {outcome.records} record(s), chain, head row and head "
                f"file verified; head {outcome.head.seq} {outcome.head.hash}"
                + (f" ({head_file})" if head_file else " (in-memory database: no head file)")
            )
        else:
            assert outcome.error is not None
            typer.echo(
                f"hub audit log broken at seq {outcome.error.seq}: {outcome.error.why}", err=True
            )
        if not outcome.ok:
            raise typer.Exit(1)
        return
    records = hub_audit.records(hub.sessions)
    if limit:
        records = records[-limit:]
    if as_json:
        for rec in records:
            typer.echo(json.dumps({k: v for k, v in rec.items() if k != "id"}, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hub audit log")
    for col in ("seq", "at", "actor", "action", "detail"):
        table.add_column(col, overflow="fold")
    for rec in records:
        detail = json.dumps(rec["detail"], sort_keys=True)
        table.add_row(str(rec["seq"]), rec["at"], rec["actor"], rec["action"], detail)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


@hub_app.command("refusals")
def refusals(
    db: str | None = DB,
    project: str | None = typer.Option(
        None, "--project", help="Only the studies of this project (the `project` of a spec)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """For the board: per study (and project), what each node refused or withheld, with the
    public reason its disclosure gate gave."""
    rows = _hub(db).refusals(project)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from ccdp.report.html import shown_refusals

    rows = shown_refusals(rows)  # a zero consent line on an answer is not worth a line
    if not rows:
        typer.echo("no refusals or withheld parts" + (f" in project {project}" if project else ""))
        return
    for study in rows:
        typer.echo(
            f"study {study['study']} ({study['title'] or study['analysis']}), project "
            f"{study['project'] or 'none'}, requested by {study['requester']}:"
        )
        for n in study["nodes"]:
            what = "withheld" if n["withheld"] else n["status"]
            typer.echo(f"  node {n['node']} round {n['round']}: {what}: {n['reason']}")


@hub_app.command("alerts")
def alerts(
    db: str | None = DB,
    project: str | None = typer.Option(None, "--project", help="Only this project's alerts."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """For the board: the nodes' disclosure alerts, newest first: which studies of a project
    combine to isolate a few records at a node, and how many as a range (never who)."""
    rows = _hub(db).disclosure_alerts(project)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no disclosure alerts" + (f" in project {project}" if project else ""))
        return
    for a in rows:
        head = f"{a['detected_at']}  node {a['node']}, project {a['project_title'] or a['project']}"
        if a["kind"] == "detection-skipped":
            typer.echo(f"{head}: detection skipped (more than {a['limit']} released sets)")
            continue
        typer.echo(f"{head}:")
        for f in a["findings"]:
            names = [s["title"] if s["known"] else f"study {s['study_id']}" for s in f["studies"]]
            typer.echo(f"  {'; '.join(names)} isolate {f['records']} records")
        if a["more"]:
            typer.echo(f"  and {a['more']} more combination(s)")


def submit(
    spec: Path = typer.Argument(..., help="Study spec (YAML or JSON)."),
    hub: str = typer.Option(..., "--hub", help="Hub URL, e.g. https://hub.example.org"),
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_TOKEN", help="Researcher token (better: the env or a file)."
    ),
    token_file: Path | None = TOKEN_FILE,
    wait: bool = typer.Option(False, "--wait", help="Wait for the result."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as `ccdp run --json`."),
    cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS."),
    max_wait: float = typer.Option(3600, "--max-wait", help="Give up waiting after S seconds."),
) -> None:
    """Submit a study to a hub; with --wait print its result as `ccdp run` does."""
    from ccdp.report.console import print_result

    client = hub_client(hub, the_token(token, token_file, "CCDP_TOKEN"), cacert)
    study_id = client.submit_file(spec)
    if not wait:
        typer.echo(f"study submitted; id:\n{study_id}")
        return
    study = client.wait(study_id, max_wait)
    if study["status"] == "failed":
        from ccdp.federation.client import StudyFailed

        raise StudyFailed(f"study {study_id} failed at the hub: {study['error']}")
    if as_json:
        typer.echo(json.dumps(study["result"], indent=2, default=str))
    else:
        print_result(study)
    if study["result"].get("result") is None:
        raise typer.Exit(1)


study_app = typer.Typer(
    help="A researcher's studies at a hub: list them, show one, print its result.",
    no_args_is_help=True,
)
TOKEN = typer.Option(
    None, "--token", envvar="CCDP_TOKEN", help="Researcher token (better: the env or a file)."
)


@study_app.command("list")
def study_list(
    hub: str = HUB,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Every study this token may see, oldest first: id, status, analysis, title."""
    rows = hub_client(hub, the_token(token, token_file, "CCDP_TOKEN"), cacert).studies()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"studies at {hub}")
    for col in ("id", "status", "analysis", "title"):
        table.add_column(col, no_wrap=col == "id")
    for r in rows:
        table.add_row(r["id"], r["status"], r["analysis"], r["title"])
    Console().print(table)


@study_app.command("show")
def study_show(
    study_id: str = typer.Argument(..., help="The id `ccdp submit` printed."),
    hub: str = HUB,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """A study's status, spec and, per node, how it took part."""
    study = hub_client(hub, the_token(token, token_file, "CCDP_TOKEN"), cacert).study(study_id)
    if as_json:
        typer.echo(json.dumps(study, indent=2, default=str))
        return
    typer.echo(
        f"{study_id}: {study['status']}" + (f" ({study['error']})" if study.get("error") else "")
    )
    for key in ("title", "analysis", "created_at", "finished_at"):
        if study.get(key) is not None:
            typer.echo(f"  {key}: {study[key]}")
    for node, status in ((study.get("result") or {}).get("nodes") or {}).items():
        typer.echo(
            f"  node {node}: {status['status']}"
            + (f" ({status['reason']})" if status.get("reason") else "")
        )


@study_app.command("result")
def study_result(
    study_id: str = typer.Argument(..., help="The id `ccdp submit` printed."),
    hub: str = HUB,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = CACERT,
    as_json: bool = typer.Option(False, "--json", help="Print the result as `ccdp run --json`."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the study to finish."),
    max_wait: float = typer.Option(600, "--max-wait", help="Give up waiting after S seconds."),
) -> None:
    """A finished study's result, printed as `ccdp run` prints it (exit 1 while unfinished;
    --wait waits for it)."""
    from ccdp.report.console import print_result

    client = hub_client(hub, the_token(token, token_file, "CCDP_TOKEN"), cacert)
    study = client.wait(study_id, max_wait) if wait else client.study(study_id)
    if study["status"] not in ("done", "failed"):
        typer.echo(f"study {study_id} is {study['status']}: no result yet", err=True)
        raise typer.Exit(1)
    if study["status"] == "failed":
        typer.echo(f"study {study_id} failed at the hub: {study.get('error')}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(study["result"], indent=2, default=str))
    else:
        print_result(study)
    if study["result"].get("result") is None:  # as `ccdp submit --wait`: no pooled result
        raise typer.Exit(1)
