"""Simulated researchers: asyncio coroutines, each with its own token, cookies and connections.

Each researcher signs in to the dashboard (the sign-in form's CSRF cookie, then the session
cookie), then until the end time picks one action at a time, with an exponential think time
between actions: read a dashboard page, read the API (studies, nodes, catalogues), or submit a
study and follow it to its result. Feasibility counts are the common submission; a few
cross-tabulations and Kaplan-Meier curves join them. A researcher follows its study the way the
dashboard's counts region does (long-polls of `/api/studies/{id}?wait=`) or through that region
itself (`/feasibility/counts/{id}`, which long-polls 5 s at the hub).

Every request is timed and recorded under its route template; nothing here asserts: the harness
reports (bench_load.py) and the CI test decides.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGES = ["/studies", "/network", "/resources", "/feasibility"]
API_READS = ["/api/studies", "/api/nodes", "/api/catalogues"]
GROUPS = ["I", "II", "III", "IV", "V", "VI"]


@dataclass
class Sample:
    route: str
    status: int  # 0: no answer (transport error or timeout)
    seconds: float
    at: float
    error: str | None = None


@dataclass
class Studied:
    """One submitted study as the researcher saw it."""

    study_id: str
    analysis: str
    submitted_at: float
    token: str = field(repr=False, default="")
    status: str = "queued"
    error: str | None = None
    finished_at: float | None = None
    nodes_answered: int = 0


@dataclass
class Record:
    samples: list[Sample] = field(default_factory=list)
    studies: dict[str, Studied] = field(default_factory=dict)
    refused_submissions: int = 0
    cut_short: int = 0  # researchers whose last action was still running at the end (+ grace)


def study_spec(rng: random.Random) -> dict[str, Any]:
    """A feasibility count most of the time (as the dashboard's Feasibility page builds one),
    else a cross-tabulation or a Kaplan-Meier curve."""
    roll = rng.random()
    cohort: dict[str, Any] = {}
    if rng.random() < 0.5:  # one level: the feasibility tier refuses an undeclared grouping
        cohort["iccc_group"] = [rng.choice(GROUPS)]
    if rng.random() < 0.3:
        cohort["sex"] = rng.choice(["male", "female"])
    spec: dict[str, Any]
    if roll < 0.85:
        spec = {"analysis": "count", "by": [rng.choice(["country", "iccc_group", "sex"])]}
    elif roll < 0.95:
        spec = {"analysis": "crosstab", "by": ["iccc_group", "sex"]}
    else:
        spec = {"analysis": "km", "outcome": "os"}
    spec["title"] = f"load {spec['analysis']}"
    if cohort:
        spec["cohort"] = cohort
    return spec


class Researcher:
    """One person at the dashboard and the API."""

    def __init__(
        self,
        n: int,
        url: str,
        token: str,
        record: Record,
        think: float,
        seed: int,
        submit: float = 0.1,
        study_timeout: float | None = None,
    ) -> None:
        self.n = n
        self.submit = submit
        self.study_timeout = study_timeout
        self.token = token
        self.record = record
        self.think = think
        self.rng = random.Random(seed)
        self.mine: list[str] = []
        self.http = httpx.AsyncClient(
            base_url=url, timeout=httpx.Timeout(30.0, read=90.0), follow_redirects=False
        )

    async def call(
        self, method: str, path: str, route: str, *, bearer: bool = True, **kw: Any
    ) -> httpx.Response | None:
        """One timed request; None when no answer came (recorded as status 0)."""
        headers = {"Authorization": f"Bearer {self.token}"} if bearer else {}
        t0 = time.perf_counter()
        try:
            resp = await self.http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            took = time.perf_counter() - t0
            self.record.samples.append(
                Sample(route, 0, took, time.monotonic(), f"{type(exc).__name__}: {exc}"[:200])
            )
            return None
        took = time.perf_counter() - t0
        err = None
        if resp.status_code >= 400 or (resp.status_code >= 300 and method == "GET"):
            err = f"{resp.status_code} {resp.headers.get('location', '')} {resp.text[:160]}"
        self.record.samples.append(Sample(route, resp.status_code, took, time.monotonic(), err))
        if resp.status_code == 503:  # the hub's database is away: wait as told, as people do
            await asyncio.sleep(retry_after(resp))
        return resp

    async def sign_in(self) -> None:
        """The dashboard's sign-in: the form (CSRF cookie), then POST /signin (session cookie)."""
        form = await self.call("GET", "/", "GET / (sign-in form)", bearer=False)
        if form is None or form.status_code != 200:
            return
        match = CSRF.search(form.text)
        data = {"csrf": match.group(1) if match else "", "token": self.token, "next": "/studies"}
        await self.call("POST", "/signin", "POST /signin", bearer=False, data=data)

    async def run(self, until: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, min(5.0, self.think * 2)))  # stagger starts
        await self.sign_in()
        while time.monotonic() < until:
            roll = self.rng.random()
            if roll < self.submit:
                await self.submit_and_follow(until)
            elif roll < self.submit + (1 - self.submit) / 2:
                await self.page()
            else:
                await self.api_read()
            await asyncio.sleep(min(self.rng.expovariate(1 / self.think), self.think * 4))

    async def page(self) -> None:
        """A dashboard page (cookie session, no bearer), sometimes one of this person's studies."""
        if self.mine and self.rng.random() < 0.3:
            sid = self.rng.choice(self.mine)
            await self.call("GET", f"/studies/{sid}", "GET /studies/{id} (page)", bearer=False)
            return
        path = self.rng.choice(PAGES)
        await self.call("GET", path, f"GET {path} (page)", bearer=False)

    async def api_read(self) -> None:
        if self.mine and self.rng.random() < 0.4:
            sid = self.rng.choice(self.mine)
            await self.call("GET", f"/api/studies/{sid}", "GET /api/studies/{id}")
            return
        path = self.rng.choice(API_READS)
        await self.call("GET", path, f"GET {path}")

    async def submit_and_follow(self, until: float) -> None:
        spec = study_spec(self.rng)
        if self.study_timeout is not None:  # each round ends by then: done, or failed saying why
            spec["timeout"] = self.study_timeout
        resp = await self.call("POST", "/api/studies", "POST /api/studies", json={"spec": spec})
        if resp is None or resp.status_code != 201:
            self.record.refused_submissions += 1
            return
        sid = resp.json()["id"]
        self.mine.append(sid)
        seen = Studied(sid, spec["analysis"], time.monotonic(), self.token)
        self.record.studies[sid] = seen
        await self.follow(seen, until)

    async def follow(self, seen: Studied, until: float) -> None:
        """Long-poll the study until it ends or the run does; half the time through the
        dashboard's counts region (a count study), else the API."""
        while seen.status not in ("done", "failed") and time.monotonic() < until:
            if seen.analysis == "count" and self.rng.random() < 0.5:
                path = f"/feasibility/counts/{seen.study_id}"
                await self.call("GET", path, "GET /feasibility/counts/{id} (long-poll 5 s)")
                if self.rng.random() < 0.5:
                    continue  # the fragment says only what it shows: ask the API too, below
            await self.check(seen, wait=10)

    async def check(self, seen: Studied, wait: float) -> None:
        route = "GET /api/studies/{id}?wait= (long-poll)" if wait else "GET /api/studies/{id}"
        resp = await self.call("GET", f"/api/studies/{seen.study_id}", route, params={"wait": wait})
        if resp is None or resp.status_code != 200:
            return
        note(seen, resp.json())

    async def close(self) -> None:
        await self.http.aclose()


def note(seen: Studied, body: dict[str, Any]) -> None:
    """Copy a study's state from the hub's answer."""
    seen.status = body.get("status", seen.status)
    if seen.status in ("done", "failed") and seen.finished_at is None:
        seen.finished_at = time.monotonic()
        seen.error = body.get("error")
        nodes = (body.get("result") or {}).get("nodes") or {}
        seen.nodes_answered = sum(1 for s in nodes.values() if s.get("status") == "answered")


def retry_after(resp: httpx.Response, cap: float = 10.0) -> float:
    """The seconds a 503 asks the client to wait (`Retry-After`), at most `cap`; 1 if unsaid."""
    try:
        return min(cap, max(0.0, float(resp.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


async def drain(url: str, record: Record, timeout: float) -> None:
    """After the run: long-poll every study not yet finished (with its owner's token, all at
    once, as their owners would) until it ends or `timeout` passes."""
    end = time.monotonic() + timeout
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as http:

        async def follow(seen: Studied) -> None:
            while seen.status not in ("done", "failed") and time.monotonic() < end:
                wait = max(0.0, min(10.0, end - time.monotonic()))
                try:
                    resp = await http.get(
                        f"/api/studies/{seen.study_id}",
                        headers={"Authorization": f"Bearer {seen.token}"},
                        params={"wait": wait},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(1.0)
                    continue
                if resp.status_code == 200:
                    note(seen, resp.json())
                elif resp.status_code == 503:
                    await asyncio.sleep(retry_after(resp))

        await asyncio.gather(*(follow(s) for s in list(record.studies.values())))


async def run_researchers(
    url: str,
    tokens: list[str],
    duration: float,
    think: float,
    submit: float,
    seed: int = 1,
    grace: float = 15.0,
    study_timeout: float | None = None,
) -> Record:
    """Run one researcher per token for `duration` seconds; `submit` is the share of their
    actions that submit a study. Returns what they saw."""
    record = Record()
    until = time.monotonic() + duration
    people = [
        Researcher(i, url, tok, record, think, seed * 100_003 + i, submit, study_timeout)
        for i, tok in enumerate(tokens)
    ]
    running = [asyncio.ensure_future(p.run(until)) for p in people]
    try:
        # an action under way at the end may long-poll a loaded hub for a while: it is let run
        # `grace` seconds, then dropped (its study is followed by the drain, not lost)
        _, late = await asyncio.wait(running, timeout=duration + grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        record.cut_short = len(late)
    finally:
        await asyncio.gather(*(p.close() for p in people))
    return record
