"""`ccdp node ...`: the node operator's commands (policy, audit log). The networked node agent's
commands join the same group (`node_app`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ccdp.federation.audit import AuditLog

node_app = typer.Typer(help="Node operator: policy, audit log.", no_args_is_help=True)
policy_app = typer.Typer(help="Show or change the node's disclosure policy.", no_args_is_help=True)
node_app.add_typer(policy_app, name="policy")

STORE = typer.Option(..., "--store", "-s", help="The node store (DuckDB file).")


@policy_app.command("show")
def policy_show(
    store: Path = STORE, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Print the policy in force (the file beside the store, or the defaults)."""
    import yaml

    from ccdp.disclosure.policy import load_policy, policy_path

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
    from ccdp.disclosure.policy import policy_path, set_policy_value

    policy = set_policy_value(store, key, value)
    typer.echo(f"{key}: {getattr(policy, key)!r} written to {policy_path(store)}")


@node_app.command("audit")
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
    from ccdp.federation.audit import AuditLog

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
    from ccdp.federation.audit import AuditError
    from ccdp.federation.client import tls_verify
    from ccdp.federation.node.agent import hub_audit_head

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


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
