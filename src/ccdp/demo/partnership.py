"""`ccdp demo`: a whole partnership on one machine, from messy exports to an HTML report.

Synthesise six countries' registries, ingest each into its own node store (with the country's
mapping spec when the export is messy), start a hub and one node agent per country as separate
processes on loopback, run the consortium's first studies through the hub, and write the report.
Every process started here is stopped before returning (unless asked to keep running).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from ccdp.demo.processes import (
    DemoError,
    Processes,
    _cli,
    _env,
    _wait_up,
    free_port,
    node_token,
    user_token,
)

COUNTRIES = ("FR", "DE", "IT", "PL", "BR", "KE")
STUDIES = Path(__file__).with_name("studies.yaml")
PROJECT = Path(__file__).with_name("project.yaml")
FEASIBILITY = Path(__file__).with_name("feasibility.yaml")
PENDING = Path(__file__).with_name("pending.yaml")
MAPPINGS = Path(__file__).resolve().parents[3] / "examples" / "mappings"


def _run(args: list[str], log: Path, step: str) -> None:
    with log.open("ab") as fh:
        proc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, env=_env())
    if proc.returncode != 0:
        raise DemoError(f"{step} failed (exit {proc.returncode}); see {log}")


def demo_project(countries: list[str] | tuple[str, ...], path: Path = PROJECT) -> dict[str, Any]:
    """A demo project file with every node and a year to run; the main project (PROJECT) gets
    the analyses its studies use (the board reviews it, each custodian accepts it)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "analyses" not in raw:
        raw["analyses"] = sorted({st["spec"]["analysis"] for st in load_studies()})
    if path == PROJECT:  # the protocol registers the studies the demo runs (governance.md)
        raw["studies"] = [st["spec"] for st in load_studies()]
    expires = (datetime.now(UTC).date() + timedelta(days=365)).isoformat()
    return {**raw, "nodes": list(countries), "expires": expires}


@dataclass
class Projects:
    """The demo's projects: the studies' project, the feasibility project (both approved and
    accepted by every node), and one request left pending for the board."""

    studies: str
    feasibility: str
    pending: str


def _request(out: Path, url: str, researcher: str, source: Path, countries: list[str]) -> str:
    path = out / f"project-{source.stem}.yaml"
    path.write_text(yaml.safe_dump(demo_project(countries, source), sort_keys=False), "utf-8")
    args = _cli("project", "request", path, "--hub", url)
    asked = _run_logged(args, out / "logs" / "governance.log", user_token(researcher))
    return asked.strip().splitlines()[-1]


def run_governance(
    out: Path,
    url: str,
    researcher: str,
    board: str,
    tokens: dict[str, str],
    stores: dict[str, Path],
    progress: Progress | LineProgress,
    exact_release: str = "registered",
) -> Projects:
    """The partnership's governance, as its people run it: the researcher requests the projects
    (the studies' project with its registered studies), the board approves two, each node's
    custodian records its policy (`exact_release`: by default only registered studies are
    answered exactly without her) and accepts them at the node, which records the registered
    studies' hashes; the third request waits for the board (the dashboard's Governance page)."""
    task = progress.add_task("projects: requested, approved, accepted", total=3 + len(tokens))
    log = out / "logs" / "governance.log"
    hub = ("--hub", url)
    countries = list(tokens)
    projects = Projects(
        studies=_request(out, url, researcher, PROJECT, countries),
        feasibility=_request(out, url, researcher, FEASIBILITY, countries),
        pending=_request(out, url, researcher, PENDING, countries),
    )
    progress.advance(task)
    for project in (projects.studies, projects.feasibility):
        review = ("project", "review", project, "--approve", *hub)
        _run_logged(_cli(*review), log, user_token(board))
        progress.advance(task)
    for c, token in tokens.items():
        # population-based registries work under a legal basis: consent codes restrict, but a
        # child registered without recorded consent is still counted (policy `consent`)
        policy = ("node", "policy", "set", "consent", "statutory", "--store", stores[c])
        _run_logged(_cli(*policy), log)
        rule = ("node", "policy", "set", "exact_release", exact_release, "--store", stores[c])
        _run_logged(_cli(*rule), log)
        for project in (projects.studies, projects.feasibility):
            # the acceptance audit runs first (its lines stay in this log); a finding stops it
            accept = ("node", "projects", "accept", project, "--store", stores[c])
            _run_logged(_cli(*accept, *hub), log, node_token(token))
        progress.advance(task)
    return projects


def very_high_risk_child(store: Path) -> str | None:
    """A child of `store` whose first ALL relapse is in strategic group S4 (the demo's
    referral), or None."""
    from ccdp.cohort.view import cohort_sql
    from ccdp.federation.node.local import connect_store

    con = connect_store(store)
    try:
        sql = cohort_sql(
            ["patient_id"], "v.bfm_strategic_group = 'S4' AND v.vital_status = 'alive'"
        )
        row = con.execute(sql + " ORDER BY v.patient_id LIMIT 1", [store.stem]).fetchone()
    finally:
        con.close()
    return None if row is None else str(row[0])


def run_referral(
    out: Path, url: str, tokens: dict[str, str], stores: dict[str, Path]
) -> str | None:
    """The treating centre of the first node with an S4 relapse refers the child to the
    expert board and its custodian releases the case: it waits for the board (the dashboard's
    Referrals page). Returns the referral's id at the hub."""
    log = out / "logs" / "referral.log"
    for c, token in tokens.items():
        child = very_high_risk_child(stores[c])
        if child is None:
            continue
        node = ("--store", stores[c], "--hub", url)
        question = "S4 relapse: is CAR-T or HSCT the better next step?"
        refer = _cli("node", "refer", child, *node, "-q", question, "--json")
        made = _run_logged(refer, log, node_token(token))
        ref = json.loads(made)["id"]
        release = _cli("node", "referrals", *node, "--release", ref)
        sent = _run_logged(release, log, node_token(token))
        return sent.split("at the hub as ")[1].split()[0]
    return None


def _run_logged(args: list[str], log: Path, secrets: dict[str, str] | None = None) -> str:
    """Run one ccdp command (its tokens, `secrets`, in its environment), appending its output
    to `log`; DemoError names the log on failure."""
    env = {**_env(), **(secrets or {})}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    shown = [str(a) for a in args[3:]]
    with log.open("a", encoding="utf-8") as fh:  # tokens are secrets: never in a log
        fh.write(f"$ ccdp {' '.join(shown)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise DemoError(f"demo step failed: ccdp {' '.join(map(str, args[3:6]))}; see {log}")
    return proc.stdout


def load_studies() -> list[dict[str, Any]]:
    return yaml.safe_load(STUDIES.read_text(encoding="utf-8"))


REGISTERED_NOTE = (
    " Registered study of the project: every node answered it exactly (exact_release: "
    "registered; the node checked the study's hash against those its custodian accepted)."
)
# The feasibility tier, after the registered studies: the nodes switch on perturbed counts
# (the dashboard's Feasibility page runs the same way) and a count of the feasibility project,
# registered nowhere, is answered at once, each node's count with cell-key noise.
FEASIBILITY_COUNT: dict[str, Any] = {
    "key": "feasibility_perturbed",
    "why": "How many children with leukaemia does each country hold? A feasibility count of the "
    "standing feasibility project, not registered: answered automatically by every node under "
    "counts: perturbed, so each count is perturbed (cell-key method, within the bound shown), "
    "never exact.",
    "spec": {
        "title": "Feasibility - children with leukaemia by country (perturbed counts)",
        "analysis": "count",
        "by": ["country"],
        "cohort": {"iccc_group": ["I"]},
    },
}


def perturb_counts(out: Path, stores: dict[str, Path]) -> None:
    """Each custodian switches on the feasibility tier: counts perturbed (cell-key method)."""
    log = out / "logs" / "governance.log"
    for store in stores.values():
        _run_logged(_cli("node", "policy", "set", "counts", "perturbed", "--store", store), log)


class Stopped(Exception):
    """The demo was asked to stop by a signal (SIGTERM, SIGHUP): unwinds like Ctrl-C so that
    every child is stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def stop_on_signals() -> Callable[[], None]:
    """Make SIGTERM and SIGHUP raise Stopped in the main thread, as SIGINT raises
    KeyboardInterrupt (their default would end the demo at once and leave its hub and node
    agents running); returns the function that restores the previous handlers."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore


class LineProgress:
    """Progress as one line per step done, for output that is not a terminal (a CI log, a
    pipe), where a live bar would print nothing until the end. Same calls as rich's Progress:
    a line when a step completes (its full description, `k/n` for a task of several steps,
    `done` for a task of one), nothing when a task is added or only renamed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tasks: dict[TaskID, dict[str, Any]] = {}
        self.start = time.monotonic()

    def _say(self, task: TaskID) -> None:
        t = self.tasks[task]
        took = time.monotonic() - self.start
        done = "done" if t["total"] == 1 else f"{t['completed']:g}/{t['total']:g}"
        self.console.print(
            f"[{took:6.1f} s] {t['description']}: {done}", highlight=False, soft_wrap=True
        )

    def add_task(self, description: str, total: float = 1) -> TaskID:
        task = TaskID(len(self.tasks))
        self.tasks[task] = {"description": description, "total": total, "completed": 0}
        return task

    def advance(self, task: TaskID, advance: float = 1) -> None:
        self.tasks[task]["completed"] += advance
        self._say(task)

    def update(
        self, task: TaskID, completed: float | None = None, description: str | None = None
    ) -> None:
        t = self.tasks[task]
        t["description"] = t["description"] if description is None else description
        if completed is not None and completed != t["completed"]:
            t["completed"] = completed
            self._say(task)


@contextmanager
def progress_bar(console: Console) -> Iterator[Progress | LineProgress]:
    if not console.is_terminal:
        yield LineProgress(console)
        return
    with Progress(
        SpinnerColumn(),
        TextColumn(  # a long study title ends in an ellipsis on one line of the live bar
            "[progress.description]{task.description}",
            table_column=Column(max_width=56, no_wrap=True, overflow="ellipsis"),
        ),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        yield progress


def messy_available(countries: tuple[str, ...]) -> bool:
    """Messy exports need the synthesiser's messy writer and every country's mapping spec."""
    import importlib.util

    has_writer = importlib.util.find_spec("ccdp.synth.messy") is not None
    return has_writer and all((MAPPINGS / f"{c}.yaml").is_file() for c in countries)


def synthesise_and_ingest(
    out: Path,
    countries: tuple[str, ...],
    seed: int,
    patients: int,
    progress: Progress | LineProgress,
    secret: Path | None = None,
) -> tuple[dict[str, Path], str]:
    """Messy exports ingested with each country's mapping when all mappings exist; otherwise
    the data-model (native) exports. With a linkage `secret`, the exports carry identifiers and
    each node, given the secret before its ingest, encodes them at ingest (issue 25). Returns
    the stores and the format used."""
    logs = out / "logs"
    messy = messy_available(countries)
    fmt = "messy" if messy else "native"
    exports = out / "exports"
    task = progress.add_task(f"synthesising {len(countries)} registries ({fmt})", total=1)
    if exports.exists():
        shutil.rmtree(exports)
    _run(
        _cli(
            "synth",
            exports,
            "--countries",
            ",".join(countries),
            "--seed",
            seed,
            "--patients",
            patients,
            "--format",
            fmt,
            *(["--with-identifiers"] if secret is not None else []),
        ),
        logs / "synth.log",
        "synthesis",
    )
    progress.update(task, completed=1)
    stores_dir = out / "stores"
    stores_dir.mkdir(exist_ok=True)
    task = progress.add_task("ingesting each country into its node store", total=len(countries))
    stores: dict[str, Path] = {}
    running: list[tuple[str, subprocess.Popen]] = []
    for c in countries:
        store = stores_dir / f"{c}.duckdb"
        for old in stores_dir.glob(f"{c}.*"):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        if secret is not None:
            from ccdp.demo.linking import give_secret

            give_secret({c: store}, secret)
        args = _cli("ingest", exports / c, "--store", store, "--json")
        if messy:
            args += ["--mapping", str(MAPPINGS / f"{c}.yaml")]
        with (
            (logs / f"ingest-{c}.json").open("wb") as fh,
            (logs / f"ingest-{c}.log").open("ab") as eh,
        ):
            running.append((c, subprocess.Popen(args, stdout=fh, stderr=eh, env=_env())))
        stores[c] = store
        if len(running) >= 2:  # two cores: two ingests at a time
            _finish_ingest(running.pop(0), logs, progress, task, running)
    while running:
        _finish_ingest(running.pop(0), logs, progress, task, running)
    return stores, fmt


def _finish_ingest(
    item: tuple[str, subprocess.Popen],
    logs: Path,
    progress: Progress | LineProgress,
    task: TaskID,
    others: list[tuple[str, subprocess.Popen]],
) -> None:
    """Wait for one ingest; on a failure or a signal, stop the ingests still running."""
    c, proc = item
    try:
        code = proc.wait()
    except BaseException:
        for _, other in [item, *others]:
            other.kill()
            other.wait()
        raise
    if code != 0:
        for _, other in others:
            other.kill()
            other.wait()
        raise DemoError(f"ingest of {c} failed; see {logs / f'ingest-{c}.log'}")
    progress.advance(task)


def ingest_summary(out: Path, countries: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows read, accepted and quarantined per country, from each `ccdp ingest --json` report."""
    import json

    rows = []
    for c in countries:
        rep = json.loads((out / "logs" / f"ingest-{c}.json").read_text(encoding="utf-8"))
        rows.append(
            {"country": c, **{k: rep.get(k) for k in ("rows_read", "accepted", "quarantined")}}
        )
    return rows


@dataclass
class Partnership:
    """A running partnership on this machine: the hub's address, a token for each node and
    each of the demo's people (researcher, board, admin, expert), the stores, the projects and
    the referral waiting for the expert board."""

    url: str
    nodes: dict[str, str]
    people: dict[str, str]
    stores: dict[str, Path]
    projects: Projects
    fmt: str
    referral: str | None = None
    linkage: Any = None  # ccdp.demo.linking.Linkage, when the registries were linked


def start_partnership(
    out: Path,
    procs: Processes,
    progress: Progress | LineProgress,
    countries: tuple[str, ...] = COUNTRIES,
    seed: int = 2024,
    patients: int = 9000,
    exact_release: str = "registered",
    link: bool = False,
) -> Partnership:
    """Synthesise and ingest the registries (with identifiers, encoded at ingest, when `link`),
    link them through a linkage service (another process in `procs`), start the hub (closed:
    studies need a project) and one agent per node in `procs`, and run the governance (each
    node under `exact_release`); `procs.stop()` ends it all."""
    from ccdp.federation.client import HubClient
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database

    (out / "logs").mkdir(parents=True, exist_ok=True)
    secret = None
    if link:
        from ccdp.demo.linking import link_registries, write_secret

        secret = write_secret(out)
    stores, fmt = synthesise_and_ingest(out, countries, seed, patients, progress, secret)
    # before the node agents open the stores and before governance: each custodian's
    # acceptance audit computes the registered studies with the link groups they will use
    linkage = link_registries(out, procs, stores, progress) if link else None
    db_path = out / "hub.db"
    for f in out.glob("hub.db*"):
        f.unlink()
    db = f"sqlite:///{db_path}"
    hub = Hub(open_database(db))
    tokens = {c: hub.add_node(c, c) for c in countries}
    roles = ("researcher", "board", "admin", "expert")
    people = {role: hub.add_user(role, role) for role in roles}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    task = progress.add_task("starting hub and node agents", total=1 + len(countries))
    procs.start("hub", _cli("hub", "serve", "--db", db, "--port", port), out / "logs" / "hub.log")
    _wait_up(url, procs)
    progress.advance(task)
    for c in countries:
        args = _cli("node", "run", "--store", stores[c], "--hub", url, "--poll", "10")
        procs.start(f"node {c}", args, out / "logs" / f"node-{c}.log", node_token(tokens[c]))
    client = HubClient(url, people["researcher"])
    _wait_nodes(client, countries, procs, progress, task)
    projects = run_governance(
        out, url, people["researcher"], people["board"], tokens, stores, progress, exact_release
    )
    task = progress.add_task("a referral to the expert board", total=1)
    referral = run_referral(out, url, tokens, stores)
    progress.advance(task)
    return Partnership(url, tokens, people, stores, projects, fmt, referral, linkage)


def print_sign_in(console: Console, p: Partnership) -> None:
    """The dashboard's address and a sign-in token per role (a demo's tokens, on its console)."""
    console.print(f"[bold]dashboard:[/] {p.url}/   (API docs {p.url}/docs)")
    console.print("sign in with one of these tokens:")
    for role, token in p.people.items():
        console.print(f"  {role:<10} {token}", highlight=False, soft_wrap=True)
    console.print(f"a project waits for the board's review: {p.projects.pending}")
    if p.referral:
        console.print(f"a referral waits for the expert board: {p.referral}")


def run_demo(
    out: Path,
    countries: tuple[str, ...] = COUNTRIES,
    seed: int = 2024,
    patients: int = 9000,
    keep_running: bool = False,
    console: Console | None = None,
) -> Path:
    """The whole demo; returns the report's path."""
    from ccdp.federation.client import HubClient
    from ccdp.report.html import StudyEntry, render_report

    console = console or Console()
    out = out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs = Processes()
    restore = stop_on_signals()
    try:
        with progress_bar(console) as progress:
            p = start_partnership(out, procs, progress, countries, seed, patients, link=True)
            url, fmt = p.url, p.fmt
            client = HubClient(url, p.people["researcher"])
            studies = load_studies()
            task = progress.add_task("running studies through the hub", total=len(studies) + 1)
            entries = []
            for st in studies:
                t0 = time.monotonic()
                progress.update(task, description=f"study: {st['spec']['title']}")
                sid = client.submit({**st["spec"], "project": p.projects.studies})
                record = client.wait(sid, max_wait=600)
                why = st["why"] + REGISTERED_NOTE
                entries.append(
                    StudyEntry(st["key"], why, st["spec"], record, time.monotonic() - t0)
                )
                progress.advance(task)
            section = None
            if p.linkage is not None:  # before the nodes perturb counts: the truth runs exactly
                from ccdp.demo.linking import linkage_section

                section = linkage_section(out, p.linkage, p.stores, entries)
            perturb_counts(out, p.stores)
            st = FEASIBILITY_COUNT
            t0 = time.monotonic()
            progress.update(task, description=f"study: {st['spec']['title']}")
            sid = client.submit({**st["spec"], "project": p.projects.feasibility})
            record = client.wait(sid, max_wait=600)
            entries.append(
                StudyEntry(st["key"], st["why"], st["spec"], record, time.monotonic() - t0)
            )
            progress.advance(task)
            progress.update(task, description="studies done")
            task = progress.add_task("writing the report", total=1)
            report = render_report(
                entries,
                out / "report.html",
                title="Childhood cancer data partnership — demo",
                subtitle=f"{len(countries)} synthetic national registries ({fmt} exports), "
                "one hub, one node agent per country; only disclosure-checked aggregates "
                "left the nodes: the project's registered studies exactly, the feasibility "
                "count perturbed.",
                facts=[
                    ("countries", str(len(countries))),
                    ("studies", str(len(entries))),
                    ("hub", url if keep_running else "demo hub on this machine (stopped)"),
                    ("minutes, end to end", f"{(time.monotonic() - started) / 60:.1f}"),
                ],
                ingest=ingest_summary(out, countries),
                linkage=section,
                footer=f"Generated by `ccdp demo` (seed {seed}); stores in {out / 'stores'}, "
                f"logs in {out / 'logs'}.",
            )
            progress.advance(task)
        if section is not None:
            from ccdp.report.html import linkage_context

            console.print("record linkage, pooled incidence:", highlight=False)
            console.print(linkage_context(section)["text"], highlight=False, soft_wrap=True)
        console.print(f"[bold green]report:[/] {report}")
        if keep_running:
            print_sign_in(console, p)
            console.print(
                "Ctrl-C (or SIGTERM, SIGHUP) stops the hub and the node agents (and the "
                "linkage service)."
            )
            try:
                while True:
                    procs.check()
                    time.sleep(1)
            except (KeyboardInterrupt, Stopped):
                console.print("stopping")
        return report
    finally:
        procs.stop()
        restore()


def _wait_nodes(client, countries, procs, progress, task, timeout: float = 120) -> None:
    """Until every node agent has polled the hub once (last-seen set)."""
    end = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < end:
        procs.check()
        now = {n["name"] for n in client.nodes() if n["last_seen"]}
        for _ in now - seen:
            progress.advance(task)
        seen |= now
        if seen >= set(countries):
            return
        time.sleep(0.3)
    raise DemoError(f"node agents not connected after {timeout:g} s: {set(countries) - seen}")


def open_in_browser(report: Path) -> None:
    import webbrowser

    webbrowser.open(report.as_uri())
