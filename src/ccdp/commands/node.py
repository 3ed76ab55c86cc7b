"""`ccdp node ...`: the node operator's commands, in one group: the disclosure policy and the
audit log, the networked node (run, pending, release, refuse, answer, keygen, catalogue), and
the node's side of trials (randomise), referrals (refer, referrals) and projects.

The whole group is assembled at the bottom of this module, in the order `ccdp node --help` lists
it; the trial, referral and project commands live beside their hub-side groups and are imported
here (light modules: typer only, so `ccdp --help` stays fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ccdp.commands.options import STORE, TOKEN_FILE, hub_client, the_token
from ccdp.commands.project import alerts, node_projects_app
from ccdp.commands.referral import refer, referrals
from ccdp.commands.trial import randomise

if TYPE_CHECKING:
    from ccdp.federation.node.audit import AuditLog


node_app = typer.Typer(
    help="Node operator: policy, audit log, the node agent and held answers.", no_args_is_help=True
)
policy_app = typer.Typer(help="Show or change the node's disclosure policy.", no_args_is_help=True)


@policy_app.command("show")
def policy_show(
    store: Path = STORE, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Print the policy in force (the file beside the store, or the defaults)."""
    import yaml

    from ccdp.disclosure.policy import policy_path
    from ccdp.federation.node.policy import load_policy

    policy = load_policy(store)
    if as_json:
        typer.echo(json.dumps(policy.model_dump()))
        return
    path = policy_path(store)
    source = str(path) if path.exists() else f"defaults ({path} does not exist)"
    typer.echo(f"# policy of {store}: {source}")
    typer.echo(yaml.safe_dump(policy.model_dump(), sort_keys=False).rstrip())


@policy_app.command("set")
def policy_set(
    key: str = typer.Argument(..., help="Policy key, e.g. min_cell."),
    value: str = typer.Argument(..., help="New value (YAML: 10, manual, [count, km], null)."),
    store: Path = STORE,
) -> None:
    """Change one policy key (validated before it is written)."""
    from ccdp.disclosure.policy import policy_path
    from ccdp.federation.node.policy import set_policy_value

    policy = set_policy_value(store, key, value)
    typer.echo(f"{key}: {getattr(policy, key)!r} written to {policy_path(store)}")


def audit(
    store: Path = STORE,
    verify: bool = typer.Option(False, "--verify", help="Check the chain and its head."),
    hub: str | None = typer.Option(
        None, "--hub", help="With --verify: also check against the head the hub holds."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_NODE_TOKEN", help="Node token (with --hub)."
    ),
    cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON lines."),
) -> None:
    """List what this node has sent (and refused); --verify checks nothing was altered, cut or
    rolled back (with --hub: since the hub last heard of the log)."""
    from ccdp.federation.node.audit import AuditLog

    log = AuditLog.for_store(store)
    if hub is not None and not verify:
        raise typer.BadParameter("--hub goes with --verify", param_hint="--hub")
    if verify:
        if hub is None:
            head = log.verify()
            typer.echo(
                f"audit log intact: {head.seq} record(s), chain and head verified; "
                f"head {head.seq} {head.hash} ({log.path})"
            )
            return
        _verify_with_hub(log, hub, token, cacert)
        return
    records = log.records()
    if as_json:
        for rec in records:
            typer.echo(json.dumps(rec, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    cols = ("seq", "time", "study_id", "round", "analysis", "status", "reason")
    table = Table(title=f"audit log of {store}")
    for col in cols:
        table.add_column(col)
    for rec in records:
        table.add_row(*("" if rec.get(c) is None else str(rec.get(c)) for c in cols))
    Console().print(table)


def _verify_with_hub(log: AuditLog, hub: str, token: str | None, cacert: Path | None) -> None:
    """The local checks, then: the log still holds the record the hub last heard of."""
    from ccdp.federation.client import tls_verify
    from ccdp.federation.node.agent import hub_audit_head
    from ccdp.federation.node.audit import AuditError

    if not token:
        raise typer.BadParameter("--hub needs the node's --token", param_hint="--token")
    held = hub_audit_head(hub, token, verify=tls_verify(cacert))
    if held.alert:
        raise AuditError(f"the hub holds an audit alert for this node: {held.alert}")
    if held.head is None:
        head = log.verify()
        typer.echo(
            f"audit log intact: head {head.seq} {head.hash}; the hub holds no head for this "
            "node yet (nothing to compare)"
        )
        return
    head = log.check_against(held.head)
    typer.echo(
        f"audit log intact: head {head.seq} {head.hash}; matches the hub's head "
        f"{held.head.seq} {held.head.hash[:12]} (received {held.received_at})"
    )


def run(
    store: Path = STORE,
    hub: str = typer.Option(..., "--hub", help="Hub URL (the node connects outward only)."),
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_NODE_TOKEN", help="Node token (better: the env or a file)."
    ),
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS."),
    wait: float = typer.Option(20, "--poll", help="Long-poll seconds per request."),
    open_: bool = typer.Option(
        False,
        "--open",
        help="Also answer tasks that name no project (a hub run with --open: tests, demos); "
        "by default a hub's task must name a project this node's custodian accepted.",
    ),
) -> None:
    """Serve the hub's tasks from this store until interrupted (Ctrl-C)."""
    import threading

    from rich.console import Console

    from ccdp.federation.client import tls_verify
    from ccdp.federation.node.policy import load_policy
    from ccdp.federation.node.serving import serving_agent

    token = the_token(token, token_file, "CCDP_NODE_TOKEN")
    console = Console(stderr=True)
    manual = load_policy(store).release == "manual"
    agent = serving_agent(
        store,
        hub,
        token,
        lambda agent: _connect(agent, console),
        open_=open_,
        wait=wait,
        verify=tls_verify(cacert),
        on_event=lambda msg: console.print(f"[dim]node[/] {msg}", highlight=False),
    )
    name = agent.name
    mode = "manual release" if manual else "automatic release (policy re-read for each answer)"
    console.print(f"node [bold]{name}[/] serving {store} for {hub} ({mode})")
    try:
        agent.run(threading.Event())
    except KeyboardInterrupt:
        console.print("node agent stopped")
    finally:
        agent.close()


def catalogue(
    store: Path = STORE,
    as_json: bool = typer.Option(False, "--json", help="Print the catalogue as JSON."),
    publish: bool = typer.Option(
        False,
        "--publish",
        help="Send it to the hub (with --hub and --token); logged in the node's audit log and "
        "its counts recorded in the differencing ledger, as an answer's are.",
    ),
    hub: str | None = typer.Option(None, "--hub", help="Hub URL (with --publish)."),
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_NODE_TOKEN", help="Node token (with --publish)."
    ),
    cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS."),
) -> None:
    """Print the node's catalogue as it would be published (counts through the disclosure
    gate); --publish sends it (what a custodian under `release: manual` runs)."""
    from ccdp.federation.node.catalogue import NodeCatalogue

    if publish and (hub is None or not token):
        raise typer.BadParameter("--publish needs --hub and the node's --token", param_hint="--hub")
    if not publish and hub is not None:
        raise typer.BadParameter("--hub goes with --publish", param_hint="--hub")
    if not publish:
        computed = NodeCatalogue.for_store(store).compute()
    else:
        assert hub is not None and token is not None
        client = hub_client(hub, token, cacert)
        try:
            name = client.node_name()
            computed = NodeCatalogue.for_store(store, name=name).publish()
            client.publish_catalogue(computed.catalogue.model_dump(mode="json"))
        finally:
            client.close()
    body = computed.catalogue.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(body))
    else:
        _print_catalogue(body, computed.notes)
    if publish:
        typer.echo(f"catalogue of node {body['node']} published to {hub}", err=as_json)


def _print_catalogue(body: dict, notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    def n(cell: dict, key: str = "count") -> str:
        return "suppressed" if cell.get("suppressed") else str(cell.get(key))

    console = Console()
    years = body["diagnosis_years"]
    follow = body["follow_up"]
    head = Table(title=f"catalogue of node {body['node']}", show_header=False)
    head.add_column("key")
    head.add_column("value", overflow="fold")
    policy = body["policy"]
    for key, value in (
        ("country", body["country"] or "-"),
        ("generated", body["generated_at"]),
        ("last ingest", body["last_ingest"] or "-"),
        ("patients", n(body["patients"])),
        ("tumours", n(body["tumours"])),
        ("diagnosis years", f"{years['first'] or '-'} to {years['last'] or '-'}"),
        (
            "median follow-up",
            f"{follow['median_years']} years ({follow['method']})"
            if follow["released"]
            else "not released",
        ),
        ("quality score", "-" if body["quality"]["score"] is None else body["quality"]["score"]),
        (
            "policy",
            f"min_cell {policy['min_cell']}, min_cohort {policy['min_cohort']}, release "
            f"{policy['release']}, consent {policy['consent']}, analyses "
            f"{', '.join(policy['allowed_analyses'] or ['all'])}",
        ),
    ):
        head.add_row(key, str(value))
    console.print(head)
    groups = Table(title="tumours by ICCC-3 group, sex and age group")
    for col in ("by", "level", "label", "n"):
        groups.add_column(col, justify="right" if col == "n" else "left")
    for key in ("by_iccc_group", "by_sex", "by_age_group"):
        for i, cell in enumerate(body[key]):
            groups.add_row(key[3:] if i == 0 else "", cell["level"], cell["label"], n(cell))
    console.print(groups)
    tables = Table(title="tables (completeness: % of rows filled, least complete fields)")
    for col in ("table", "rows", "least complete"):
        tables.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for t in body["tables"]:
        known = [f for f in t["fields"] if f["completeness"] is not None]
        worst = sorted(known, key=lambda f: f["completeness"])[:3]
        text = ", ".join(f"{f['name']} {f['completeness']:g}%" for f in worst) or "not released"
        tables.add_row(t["name"], n(t, "rows"), text)
    console.print(tables)
    specimens = Table(title="specimens by type")
    specimens.add_column("type")
    specimens.add_column("n", justify="right")
    for cell in body["specimens"]:
        specimens.add_row(cell["type"], n(cell))
    console.print(specimens)
    for note in notes:
        console.print(f"[dim]note[/] {note}", highlight=False)


def _connect(agent, console) -> str:
    """Learn the node's name from the hub, retrying with back-off while it is unreachable."""
    import time

    from ccdp.federation.node.agent import HubUnavailable

    while True:
        try:
            return agent.hello()
        except HubUnavailable as exc:
            delay = agent.backoff.next()
            console.print(f"[dim]node[/] hub unreachable ({exc}); retrying in {delay:.1f} s")
            time.sleep(delay)


def pending(
    store: Path = STORE,
    show_all: bool = typer.Option(False, "--all", help="Also answers already decided."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    show: str | None = typer.Option(
        None, "--show", help="Print one held answer in full (task id or a unique prefix)."
    ),
) -> None:
    """Answers waiting for the operator's release (policy `release: manual`)."""
    from rich.console import Console
    from rich.table import Table

    from ccdp.federation.node.pending import PendingStore, decision_facts, describe, readable

    if show is not None:
        item = PendingStore(store).find(show)
        full = {**describe(item), **decision_facts(item), "reason": item.answer.reason}
        full["summary"] = readable(item.answer.summary)
        typer.echo(json.dumps(full, indent=2, default=str))
        return
    items = [describe(i) for i in PendingStore(store).all() if show_all or i.state == "held"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    cols = ("id", "study", "analysis", "round", "state", "held_at", "summary")
    table = Table(title=f"answers held at {store}")
    for c in cols:
        table.add_column(c, overflow="fold")
    for it in items:
        table.add_row(*(str(it[c]) for c in cols))
    Console().print(table)


def release(
    ident: str = typer.Argument(..., help="Task id (or a unique prefix)."), store: Path = STORE
) -> None:
    """Release a held answer: the running agent posts it."""
    from ccdp.federation.node.pending import PendingStore

    item = PendingStore(store).release(ident)
    typer.echo(f"released {item.task.task_id}; the node agent posts it at its next poll")


def refuse(
    ident: str = typer.Argument(..., help="Task id (or a unique prefix)."),
    store: Path = STORE,
    reason: str = typer.Option(..., "--reason", help="Told to the hub and the researcher."),
) -> None:
    """Refuse a held answer: the hub receives a refusal with this reason, never the data."""
    from ccdp.federation.node.pending import PendingStore

    item = PendingStore(store).refuse(ident, reason)
    typer.echo(f"refused {item.task.task_id}: {reason}")


def answer(
    taskfile: Path = typer.Argument(..., help="A task file from `ccdp hub tasks`."),
    store: Path = STORE,
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_NODE_TOKEN", help="Sign with HMAC keyed by the node token."
    ),
    key: Path | None = typer.Option(None, "--key", help="Sign with this Ed25519 private key."),
    out: Path | None = typer.Option(None, "--out", help="Result file (default beside the task)."),
    open_: bool = typer.Option(
        False,
        "--open",
        help="Also answer tasks that name no project (a hub run with --open: tests, demos); "
        "by default a hub's task must name a project this node's custodian accepted.",
    ),
) -> None:
    """Answer a task offline: write a signed result file for `ccdp hub import`."""
    from ccdp.federation import resultfile as rf
    from ccdp.federation.node.local import LocalNode
    from ccdp.federation.node.pending import PendingStore
    from ccdp.wire.protocol import Task

    if (token is None) == (key is None):
        raise rf.ResultFileError("sign with exactly one of --token or --key")
    try:
        body = json.loads(taskfile.read_text(encoding="utf-8"))
        node_name, task = body["node"], Task.model_validate(body["task"])
    except (OSError, ValueError, KeyError) as exc:
        raise rf.ResultFileError(f"{taskfile}: not a ccdp task file ({exc})") from exc
    node = LocalNode(store, name=node_name, from_hub=not open_)
    pending = PendingStore(store)
    if pending.known(task.task_id):  # held before: written once the custodian decided
        item = pending.find(task.task_id)
        if item.state == "held":
            typer.echo(f"held for the custodian ({item.held_for or 'release: manual'}): decide")
            typer.echo(f"with `ccdp node release|refuse {task.task_id}`, then run this again")
            return
        ans = item.answer
    else:
        why = node.review(task)  # from the task and the custodian's record, before any data
        ans = node.answer(task)
        if why is not None:
            pending.hold(task, ans, why)
            typer.echo(f"held for the custodian ({why}): see")
            typer.echo(f"`ccdp node pending --show {task.task_id}`; no result file written")
            return
    signed = (
        rf.sign_with_token(node_name, task, ans, token)
        if token is not None
        else rf.sign_with_key(node_name, task, ans, key.read_bytes())  # type: ignore[union-attr]
    )
    target = out or taskfile.with_name(f"result-{task.task_id}.json")
    rf.write(signed, target)
    if pending.known(task.task_id):  # the custodian's decision, now on its way in this file
        pending.mark_sent(pending.find(task.task_id))
    typer.echo(f"{ans.status}: signed result written to")
    typer.echo(str(target))


def keygen(
    out: Path = typer.Argument(..., help="Where to write the private key (PEM)."),
) -> None:
    """Make an Ed25519 key pair for signing result files; register the public key at the hub."""
    from ccdp.federation.resultfile import generate_key

    pub = generate_key(out)
    pub_path = out.with_suffix(".pub.pem")
    pub_path.write_text(pub, encoding="utf-8")
    typer.echo(f"private key: {out}\npublic key (give to the hub admin):\n{pub_path}")


# The group in one place. Typer lists the plain commands in this order, then the sub-groups in
# theirs; the order is part of `ccdp --help` (tests/test_cli_help.py).
node_app.command("audit")(audit)
node_app.command("run")(run)
node_app.command("pending")(pending)
node_app.command("release")(release)
node_app.command("refuse")(refuse)
node_app.command("answer")(answer)
node_app.command("keygen")(keygen)
node_app.command("catalogue")(catalogue)
node_app.command("randomise")(randomise)
node_app.command("refer")(refer)
node_app.command("referrals")(referrals)
node_app.command("alerts")(alerts)
node_app.add_typer(policy_app, name="policy")
node_app.add_typer(node_projects_app, name="projects")
