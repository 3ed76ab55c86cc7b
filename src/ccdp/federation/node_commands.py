"""`ccdp node ...`: the node operator's commands (policy, audit log). The networked node agent's
commands join the same group (`node_app`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

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
    verify: bool = typer.Option(False, "--verify", help="Check the hash chain."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON lines."),
) -> None:
    """List what this node has sent (and refused); --verify checks nothing was altered."""
    from ccdp.federation.audit import AuditLog, audit_path

    log = AuditLog(audit_path(store))
    if verify:
        n = log.verify()
        typer.echo(f"audit log intact: {n} record(s), chain verified ({log.path})")
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


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
