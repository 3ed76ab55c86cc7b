"""`ccdp node run|pending|release|refuse|answer|keygen`: the networked node's commands.

They join the `node` group of the analyses stage (policy, audit) so an operator has one place.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

STORE = typer.Option(..., "--store", "-s", help="The node store (DuckDB file).")


def run(
    store: Path = STORE,
    hub: str = typer.Option(..., "--hub", help="Hub URL (the node connects outward only)."),
    token: str = typer.Option(..., "--token", envvar="CCDP_NODE_TOKEN", help="Node token."),
    cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS."),
    wait: float = typer.Option(20, "--poll", help="Long-poll seconds per request."),
) -> None:
    """Serve the hub's tasks from this store until interrupted (Ctrl-C)."""
    import threading

    from rich.console import Console

    from ccdp.disclosure.policy import load_policy
    from ccdp.federation.audit import AuditLog
    from ccdp.federation.client import tls_verify
    from ccdp.federation.local_node import LocalNode
    from ccdp.federation.node.agent import NodeAgent
    from ccdp.federation.node.pending import PendingStore

    console = Console(stderr=True)
    holder: dict[str, LocalNode] = {}

    def answer(task):
        return holder["node"].answer(task)

    def manual_now() -> bool:  # re-read at every answer: a policy change needs no restart
        return load_policy(store).release == "manual"

    manual = manual_now()
    agent = NodeAgent(
        hub,
        token,
        answer,
        pending=PendingStore(store),
        manual_release=manual_now,
        verify=tls_verify(cacert),
        wait=wait,
        on_event=lambda msg: console.print(f"[dim]node[/] {msg}", highlight=False),
        audit_head=AuditLog.for_store(store).head,
    )
    name = _connect(agent, console)
    holder["node"] = LocalNode(store, name=name)
    mode = "manual release" if manual else "automatic release (policy re-read for each answer)"
    console.print(f"node [bold]{name}[/] serving {store} for {hub} ({mode})")
    try:
        agent.run(threading.Event())
    except KeyboardInterrupt:
        console.print("node agent stopped")
    finally:
        agent.close()


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
) -> None:
    """Answer a task offline: write a signed result file for `ccdp hub import`."""
    from ccdp.federation import resultfile as rf
    from ccdp.federation.local_node import LocalNode
    from ccdp.federation.protocol import Task

    if (token is None) == (key is None):
        raise rf.ResultFileError("sign with exactly one of --token or --key")
    try:
        body = json.loads(taskfile.read_text(encoding="utf-8"))
        node_name, task = body["node"], Task.model_validate(body["task"])
    except (OSError, ValueError, KeyError) as exc:
        raise rf.ResultFileError(f"{taskfile}: not a ccdp task file ({exc})") from exc
    node = LocalNode(store, name=node_name)
    ans = node.answer(task)
    signed = (
        rf.sign_with_token(node_name, task, ans, token)
        if token is not None
        else rf.sign_with_key(node_name, task, ans, key.read_bytes())  # type: ignore[union-attr]
    )
    target = out or taskfile.with_name(f"result-{task.task_id}.json")
    rf.write(signed, target)
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


def register(app: typer.Typer) -> None:
    from ccdp.federation.node_commands import node_app

    node_app.command("run")(run)
    node_app.command("pending")(pending)
    node_app.command("release")(release)
    node_app.command("refuse")(refuse)
    node_app.command("answer")(answer)
    node_app.command("keygen")(keygen)
