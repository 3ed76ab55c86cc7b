"""The options every command that talks to a hub or opens a node store shares, and the one way
such a command opens its hub client (light: typer only, so `ccdp --help` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ccdp.errors import CcdpError

if TYPE_CHECKING:
    from ccdp.federation.client import HubClient

HUB = typer.Option(..., "--hub", help="Hub URL, e.g. https://hub.example.org")
CACERT = typer.Option(None, "--cacert", help="CA bundle for the hub's TLS.")
AS_JSON = typer.Option(False, "--json", help="Print JSON.")
STORE = typer.Option(..., "--store", "-s", help="The node store (DuckDB file).")
NODE_TOKEN = typer.Option(..., "--token", envvar="CCDP_NODE_TOKEN", help="Node token.")
TOKEN_FILE = typer.Option(
    None,
    "--token-file",
    help="A file holding the token, readable by its owner only (chmod 600): unlike --token, "
    "never on a command line that `ps` shows every user.",
)


class TokenFileError(CcdpError):
    """A token file that others may read, or that holds no token."""


def read_token_file(path: Path) -> str:
    """The token in `path`, refused when its group or others may read or write it: a token
    is a password, and a file anyone can read gives it to anyone."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
    if mode & 0o077:
        raise TokenFileError(
            f"--token-file {path}: mode {mode:04o} lets others read it; "
            f"`chmod 600 {path}` (owner only) and run again"
        )
    token = text.strip()
    if not token or len(token.split()) != 1:
        raise TokenFileError(f"--token-file {path}: expected one token on one line")
    return token


def the_token(token: str | None, token_file: Path | None, envvar: str) -> str:
    """The token from --token-file, else --token (or ${envvar}); one of them is required."""
    if token_file is not None:
        return read_token_file(token_file)
    if token:
        return token
    raise typer.BadParameter(
        f"give the token by ${envvar} or --token-file FILE (chmod 600), or --token",
        param_hint="--token",
    )


def hub_client(hub: str, token: str, cacert: Path | str | None = None) -> HubClient:
    """A client of the hub at `hub` with `token`, trusting the system CAs or `cacert`."""
    from ccdp.federation.client import HubClient, tls_verify

    return HubClient(hub, token, verify=tls_verify(cacert))
