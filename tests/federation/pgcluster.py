"""A PostgreSQL cluster of one's own: `initdb` into a temporary folder, `pg_ctl` on a free port,
trust auth, TCP on 127.0.0.1 only, fsync off. For tests and benchmarks that stop and restart
the server (the shared one on 5432 must never be restarted). As root, the binaries run as the
`postgres` user, since initdb refuses root. No pytest here: benchmarks/load uses it too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",  # TCP only: no socket path to own or to outgrow
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # the workers' pools, their listeners, the caller's own
}


class NoPostgresBinaries(RuntimeError):
    """initdb and pg_ctl are not installed (neither on PATH nor where pg_config says)."""


class ClusterError(RuntimeError):
    """A pg_ctl or initdb command failed (its output and the server log's tail attached)."""


def pg_binaries() -> Path:
    """The folder holding initdb and pg_ctl."""
    for tool in ("pg_ctl", "initdb"):
        found = shutil.which(tool)
        if found and (Path(found).resolve().parent / "initdb").exists():
            return Path(found).resolve().parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        folder = Path(out.stdout.strip())
        if (folder / "initdb").exists():
            return folder
    raise NoPostgresBinaries("no PostgreSQL server binaries (initdb, pg_ctl) for a private cluster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """initdb'd on construction; `start`, `stop`, `restart` and `close` are the caller's."""

    def __init__(self) -> None:
        self.bin = pg_binaries()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ccdp-pg-"))  # /tmp: `postgres` can reach it
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\n")
            conf.writelines(f"{k} = {v}\n" for k, v in SETTINGS.items())

    def _run(self, tool: str, *args: object, timeout: float = 120) -> None:
        cmd = [*self.as_user, str(self.bin / tool), *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ClusterError(f"{tool} failed: {done.stdout}\n{done.stderr}\n{self.server_log()}")

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-m", mode, "-w", "restart")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """A new database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the server at once if it runs, and remove its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
