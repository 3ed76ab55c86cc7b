"""`ccdp linkage ...`: record linkage across registries. The node's commands (secret, encode,
run, status) and the linkage service's (serve, add-node, add-admin, members, revoke,
create-run); see docs/linkage.md for who holds what."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ccdp.commands.options import AS_JSON, CACERT, STORE, TOKEN_FILE, the_token

linkage_app = typer.Typer(
    help="Record linkage: the shared secret, encodings, the linkage service and its runs.",
    no_args_is_help=True,
)

DB = typer.Option("sqlite:///ccdp-linkage.db", "--db", help="The service's database URL or path.")
AUDIT_KEY = typer.Option(
    None, "--audit-key", help="File of the service's audit key (default: beside a SQLite file)."
)
SERVICE = typer.Option(..., "--service", help="Linkage service URL, e.g. https://link.example.org")


@linkage_app.command("secret")
def secret(
    store: Path = STORE,
    file: Path = typer.Option(..., "--file", help="The shared secret (hex or text; chmod 600)."),
) -> None:
    """Set the linkage secret the custodians share (kept in the node config, 0600). Encodings
    made under an earlier secret no longer match: run `ccdp linkage encode` after a rotation."""
    from ccdp.federation.linkage.node import read_secret_file, set_secret

    sid = set_secret(store, read_secret_file(file))
    typer.echo(f"linkage secret set for {store} (secret id {sid})")


@linkage_app.command("encode")
def encode(
    store: Path = STORE,
    identifiers: Path = typer.Option(
        ..., "--identifiers", help="identifiers.csv (patient_id, names, birth_date, sex)."
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Replace the store's encodings with new ones from an identifiers export, in one
    transaction (after the secret rotates). The identifiers are read, never stored."""
    from ccdp.federation.linkage.node import reencode

    out = reencode(store, identifiers)
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(f"{out['encoded']} encodings written ({out['replaced']} replaced) in {store}")


@linkage_app.command("run")
def run(
    store: Path = STORE,
    service: str = SERVICE,
    run_id: str = typer.Option(..., "--run", help="The run the service's admin created."),
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_NODE_TOKEN", help="Node token (better: the env or a file)."
    ),
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = CACERT,
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the others."),
    as_json: bool = AS_JSON,
) -> None:
    """Take part in a linkage run: upload this node's encodings under per-run pseudonyms, wait
    for every registry, fetch this node's groups and write them to `link_group`."""
    from ccdp.federation.client import tls_verify
    from ccdp.federation.linkage.client import LinkageClient
    from ccdp.federation.linkage.node import run as run_linkage

    tok = the_token(token, token_file, "CCDP_NODE_TOKEN")
    with LinkageClient(service, tok, verify=tls_verify(cacert)) as client:
        out = run_linkage(
            store, client, run_id, timeout, progress=lambda m: typer.echo(m, err=True)
        )
    if as_json:
        typer.echo(json.dumps(out))
        return
    typer.echo(
        f"run {run_id}: {out['records']} records sent, {out['linked']} linked "
        f"({out['kept']} kept, {out['set_aside']} set aside as another registry's copy); "
        f"link_group now holds the groups of run {run_id}"
    )


@linkage_app.command("status")
def status(store: Path = STORE, as_json: bool = AS_JSON) -> None:
    """Which linkage run produced this node's link groups (`link_group`), their counts, and
    the node's last linkage event (a later run that failed or was refused shows here)."""
    from ccdp.federation.linkage.node import link_status

    out = link_status(store)
    if as_json:
        typer.echo(json.dumps(out))
        return
    if out["run"] is None:
        typer.echo(f"{store}: no linkage run has stored link groups")
    else:
        typer.echo(
            f"link_group of {store}: run {out['run']} (stored {out['stored_at']}): "
            f"{out['linked']} linked, {out['kept']} kept, {out['set_aside']} set aside"
        )
    last = out["last_event"]
    if last and last["event"] != "linkage-linked":
        why = f": {last['reason']}" if last.get("reason") else ""
        typer.echo(f"last linkage event: {last['event']} (run {last.get('run')}){why}")


@linkage_app.command("serve")
def serve(
    db: str = DB,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8710, "--port", help="Port to listen on."),
    certfile: Path | None = typer.Option(None, "--certfile", help="TLS certificate (PEM)."),
    keyfile: Path | None = typer.Option(None, "--keyfile", help="TLS private key (PEM)."),
    audit_key: Path | None = AUDIT_KEY,
    max_upload_mib: int = typer.Option(
        256, "--max-upload-mib", min=1, max=4096, help="Largest upload of encodings (MiB)."
    ),
) -> None:
    """Run the linkage service (a trusted party's process, not the hub). It keeps no encoding
    after a run and never sees an identifier or the linkage secret."""
    from ccdp.federation.linkage.server import serve as serve_service

    serve_service(
        db, host, port, certfile, keyfile, audit_key, max_upload=max_upload_mib * 1024 * 1024
    )


def _add(name: str, kind: str, db: str, audit_key: Path | None) -> None:
    from ccdp.federation.linkage.db import open_database
    from ccdp.federation.linkage.service import LinkageService

    member = LinkageService(open_database(db, audit_key)).add_member(name, kind)
    typer.echo(member.token)
    typer.echo(f"(the {kind} token of {name}: shown once, keep it secret)", err=True)


@linkage_app.command("add-node")
def add_node(
    name: str = typer.Argument(..., help="The node's name in runs (e.g. its country code)."),
    db: str = DB,
    audit_key: Path | None = AUDIT_KEY,
) -> None:
    """Register a node with the service and print its token (once)."""
    _add(name, "node", db, audit_key)


@linkage_app.command("add-admin")
def add_admin(
    name: str = typer.Argument(..., help="The admin's name."),
    db: str = DB,
    audit_key: Path | None = AUDIT_KEY,
) -> None:
    """Register an admin of the service (creates runs) and print the token (once)."""
    _add(name, "admin", db, audit_key)


@linkage_app.command("members")
def members(db: str = DB, audit_key: Path | None = AUDIT_KEY, as_json: bool = AS_JSON) -> None:
    """List the service's nodes and admins, with kind and whether revoked (never a token)."""
    from ccdp.federation.linkage.db import open_database
    from ccdp.federation.linkage.service import LinkageService

    out = LinkageService(open_database(db, audit_key)).members()
    if as_json:
        typer.echo(json.dumps(out))
        return
    for m in out:
        state = "revoked" if m["revoked"] else "active"
        typer.echo(f"{m['name']:<24} {m['kind']:<6} {state:<8} added {m['created_at']}")


@linkage_app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The node or admin to revoke."),
    db: str = DB,
    audit_key: Path | None = AUDIT_KEY,
) -> None:
    """Revoke a node or admin: its token is refused, and a revoked node joins no new run."""
    from ccdp.federation.linkage.db import open_database
    from ccdp.federation.linkage.service import LinkageService

    out = LinkageService(open_database(db, audit_key)).revoke(name)
    typer.echo(f"{out['kind']} {out['name']} revoked: its token is refused from now on")


@linkage_app.command("create-run")
def create_run(
    run_id: str = typer.Argument(..., help="The run's id (letters, digits, _ . -)."),
    service: str = SERVICE,
    nodes: str = typer.Option(..., "--nodes", help="The nodes taking part, comma-separated."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Dice threshold (0.5-1; default: the schema's measured one)."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_LINKAGE_ADMIN_TOKEN", help="Admin token."
    ),
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = CACERT,
) -> None:
    """Create a run at the service (admin)."""
    from ccdp.federation.client import tls_verify
    from ccdp.federation.linkage.client import LinkageClient

    tok = the_token(token, token_file, "CCDP_LINKAGE_ADMIN_TOKEN")
    names = [n.strip() for n in nodes.split(",") if n.strip()]
    with LinkageClient(service, tok, verify=tls_verify(cacert)) as client:
        out = client.create_run(run_id, names, threshold)
    typer.echo(f"run {out['run_id']} created: nodes {', '.join(out['nodes'])}")


@linkage_app.command("cancel")
def cancel(
    run_id: str = typer.Argument(..., help="The run to give up."),
    service: str = SERVICE,
    token: str | None = typer.Option(
        None, "--token", envvar="CCDP_LINKAGE_ADMIN_TOKEN", help="Admin token."
    ),
    token_file: Path | None = TOKEN_FILE,
    cacert: Path | None = CACERT,
) -> None:
    """Give a run up (admin): one that cannot finish, e.g. a node of it was revoked. Its
    encodings and groups are deleted at the service; its nodes stop at their next step."""
    from ccdp.federation.client import tls_verify
    from ccdp.federation.linkage.client import LinkageClient

    tok = the_token(token, token_file, "CCDP_LINKAGE_ADMIN_TOKEN")
    with LinkageClient(service, tok, verify=tls_verify(cacert)) as client:
        out = client.cancel(run_id)
    typer.echo(f"run {out['run_id']} cancelled: its encodings and groups are deleted")
