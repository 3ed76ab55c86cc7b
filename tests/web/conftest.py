"""Browser tests of the dashboard: a real partnership (hub and node agents as processes on
loopback, started by the demo's own code) and Debian's chromium driven by Playwright.

Without chromium (`$CCDP_CHROMIUM`, else `chromium` on PATH, else /usr/bin/chromium) the tests
skip with the reason, except under CI (any truthy value), where they fail.
Every page a test opens is watched: a request to anywhere but the hub's own address fails it.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from rich.console import Console

from ccdp.demo.partnership import (
    LineProgress,
    Partnership,
    Processes,
    start_partnership,
)
from tests.conftest import chromium_path, under_ci

COUNTRIES = ("FR", "DE", "KE")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _need_browser() -> None:
    missing = None
    if chromium_path() is None:
        where = os.environ.get("CCDP_CHROMIUM") or "chromium on PATH or /usr/bin/chromium"
        missing = f"no chromium at {where} (apt-get install chromium, or set CCDP_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[test]')"
    if missing:
        if under_ci():
            pytest.fail(f"browser tests need a browser under CI: {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="session")
def partnership(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partnership]:
    """Three small registries, a closed hub, an agent per node, the demo's projects (two
    approved and accepted everywhere, one pending for the board)."""
    _need_browser()
    out = tmp_path_factory.mktemp("partnership")
    procs = Processes()
    log = io.StringIO()
    try:
        yield start_partnership(
            out,
            procs,
            LineProgress(Console(file=log)),
            COUNTRIES,
            seed=7,
            patients=1500,
            # the pages' tests run ad-hoc studies from the forms: answered as they come here
            # (`ccdp demo` itself runs its nodes under `registered`, tests/federation/test_demo)
            exact_release="any",
        )
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        exe = chromium_path()
        b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Outside:
    """Requests a page made to anywhere but the hub (each one fails the test)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.requests: list[str] = []

    def see(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.requests.append(url)


@pytest.fixture
def page(browser: Any, partnership: Partnership) -> Iterator[Any]:
    """A fresh browser context (no cookies) whose every request is checked to stay on the hub."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    outside = Outside(partnership.url)
    pg.on("request", lambda req: outside.see(req.url))
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))  # a script error (a 4xx page is not)
    pg.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    pg.set_default_timeout(20_000)
    yield pg
    context.close()
    assert outside.requests == [], f"the page requested outside the hub: {outside.requests}"
    assert errors == [], f"the browser console reported errors: {errors}"


def sign_in(page: Any, p: Partnership, role: str, next_path: str = "") -> None:
    """Sign in through the form, as a person would, with the role's token."""
    page.goto(p.url + "/" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Hub token").fill(p.people[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(
        re.compile(r".*/(network|resources|feasibility|studies|governance|referrals).*")
    )


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """A screenshot kept in docs/screenshots/ (the README shows one)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
