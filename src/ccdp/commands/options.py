"""The options every command that talks to a hub or opens a node store shares, and the one way
such a command opens its hub client (light: typer only, so `ccdp --help` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ccdp.federation.client import HubClient

HUB = typer.Option(..., "--hub", help="Hub URL, e.g. https://hub.example.org")
CACERT = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS.")
AS_JSON = typer.Option(False, "--json", help="Print JSON.")
STORE = typer.Option(..., "--store", "-s", help="The node store (DuckDB file).")
NODE_TOKEN = typer.Option(..., "--token", envvar="CCDP_NODE_TOKEN", help="Node token.")


def hub_client(hub: str, token: str, cacert: Path | str | None = None) -> HubClient:
    """A client of the hub at `hub` with `token`, trusting the system CAs or `cacert`."""
    from ccdp.federation.client import HubClient, tls_verify

    return HubClient(hub, token, verify=tls_verify(cacert))
