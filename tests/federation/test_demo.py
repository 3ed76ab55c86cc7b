"""`ccdp demo` end to end: six countries, a hub and node agents, five studies, an HTML report that
renders in a real browser, and nothing left running afterwards."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ccdp.demo.partnership import load_studies
from tests.conftest import chromium_path, run_ccdp, under_ci


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    proc = run_ccdp("demo", "--out", out, "--no-browser", "--patients", "4000", timeout=900)
    report = Path(proc.stdout.strip().splitlines()[-1])
    assert report == out / "report.html"
    (out / "demo.stdout").write_text(proc.stdout)
    return out


def running_under(path: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(path) in line and "ccdp" in line]


@pytest.mark.slow
def test_demo_writes_the_report_and_leaves_nothing_running(demo_out):
    html = (demo_out / "report.html").read_text()
    studies = load_studies()
    for st in studies:
        assert f'id="{st["key"]}"' in html
        assert st["spec"]["title"] in html
    # not a terminal: progress comes line by line, not as one live bar printed at the end
    lines = (demo_out / "demo.stdout").read_text().splitlines()
    assert "ingesting each country into its node store: 6/6" in "\n".join(lines)
    assert sum("running studies" in ln or "study:" in ln for ln in lines) >= 5
    # KM curves (2), incidence bars, forest plot: inline SVG, no external assets
    assert len(re.findall(r"<svg", html)) >= 4
    assert "<script" not in html and 'src="http' not in html and "<link" not in html
    assert len(list((demo_out / "stores").glob("*.duckdb"))) == 6
    # governance as its people run it: requested, approved by the board, accepted at each node;
    # the hub runs closed (no --open) and every study belongs to the project; no token in a log
    gov = (demo_out / "logs" / "governance.log").read_text()
    # two projects approved and accepted at all six nodes (studies, feasibility); one pending
    assert gov.count("accepted at this node") == 12 and ": approved" in gov
    assert "ccdp-user-" not in gov and "ccdp-node-" not in gov
    with sqlite3.connect(demo_out / "hub.db") as db:
        projects = {p for (p,) in db.execute("SELECT project_id FROM studies")}
        states = sorted(s for (s,) in db.execute("SELECT state FROM projects"))
    # the registered studies under the studies project, the perturbed count under feasibility
    assert len(projects) == 2 and None not in projects
    assert states == ["approved", "approved", "requested"]
    # a child with an S4 relapse referred, released by its custodian, waiting for the board
    ref_log = (demo_out / "logs" / "referral.log").read_text()
    assert "released: at the hub as R-" in ref_log
    assert "ccdp-user-" not in ref_log and "ccdp-node-" not in ref_log
    with sqlite3.connect(demo_out / "hub.db") as db:
        referrals = list(db.execute("SELECT state, summary FROM referrals"))
    assert [r[0] for r in referrals] == ["open"]
    assert '"strategic_group": "S4"' in referrals[0][1]
    # the ingest table is each node's own `ccdp ingest --json` report: read = accepted + quarantined
    for c in ("FR", "DE", "IT", "PL", "BR", "KE"):
        rep = json.loads((demo_out / "logs" / f"ingest-{c}.json").read_text())
        assert rep["rows_read"] == rep["accepted"] + rep["quarantined"] > 0
        assert f"<td>{c}</td>" in html.split('id="ingest"')[1].split("</section>")[0]
    assert "&lt;NA&gt;" not in html
    # the report outlives the demo's hub: its header names no loopback address that is gone
    assert "demo hub on this machine (stopped)" in html and "127.0.0.1" not in html
    # incidence reads as rates with their interval, e.g. "141 (131–152)"
    incidence = html.split('id="incidence"')[1].split("</section>")[0]
    assert "ASR (95% CI)" in incidence
    assert re.search(r"<td>\d+(\.\d+)? \(\d+(\.\d+)?–\d+(\.\d+)?\)</td>", incidence)
    assert running_under(demo_out) == []


@pytest.mark.slow
def test_the_demo_links_its_registries_and_reports_pooled_incidence_beside_the_truth(demo_out):
    """Issue 25's demo: one random secret (0600, in no log), a linkage service on loopback that
    keeps no encoding or result after the run, every node's link groups, and the report's
    pooled incidence with and without deduplication beside the synthesiser's truth: the
    de-duplicated count equals the truth's (truth.json's copies set aside) up to the pairs the
    linkage got wrong, and counting duplicates twice gives more cases."""
    out = (demo_out / "demo.stdout").read_text()
    assert "linking registries (linkage service): 7/7" in out
    secret = demo_out / "linkage.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    text = secret.read_text().strip()
    for log in [*(demo_out / "logs").iterdir(), demo_out / "demo.stdout"]:
        assert text not in log.read_text(errors="replace"), log
    with sqlite3.connect(demo_out / "linkage.db") as db:
        assert db.execute("SELECT count(*) FROM linkage_clks").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM linkage_results").fetchone() == (0,)
        assert [s for (s,) in db.execute("SELECT state FROM linkage_runs")] == ["done"]
    summary = json.loads((demo_out / "linkage.json").read_text())
    q = summary["quality"]
    assert q["true"] >= 10 and q["precision"] >= 0.95 and q["recall"] >= 0.9, q
    nodes = summary["nodes"]
    assert sum(n["kept"] + n["set_aside"] for n in nodes) == sum(n["linked"] for n in nodes)
    # a pair sets one copy aside, a group of k registries k - 1 of its k(k - 1)/2 pairs
    assert 0 < sum(n["set_aside"] for n in nodes) <= q["found"]
    on, off, truth = (row["cases"] for row in summary["pooled"])
    wrong = (q["found"] - q["correct"]) + (q["true"] - q["correct"])
    # a copy whose birth date slipped may fall on the other side of age 14 from its origin's
    facts = json.loads((demo_out / "exports" / "truth.json").read_text())
    slips = sum(
        any(d.startswith("birth_date") for d in pair.get("differences", []))
        for pair in facts["cross_border_duplicates"]
    )
    assert abs(on - truth) <= wrong + slips and abs(on - truth) < off - truth, summary["pooled"]
    html = (demo_out / "report.html").read_text()
    section = html.split('id="linkage"')[1].split("</section>")[0]
    assert "Pooled incidence with and without deduplication, beside the truth" in section
    for row in summary["pooled"]:
        assert row["label"] in section
    assert "precision" in section and "recall" in section


def _identifiers(folder: Path) -> pd.DataFrame:
    """The names and national ids in a country's export (native `identifiers.csv`, or the
    messy export's own columns, as `ccdp synth` writes them: synth/data/messy_styles.yaml)."""
    import yaml

    import ccdp.synth

    if (folder / "identifiers.csv").exists():
        return pd.read_csv(folder / "identifiers.csv", dtype=str, keep_default_na=False)
    styles = Path(ccdp.synth.__file__).parent / "data" / "messy_styles.yaml"
    style = yaml.safe_load(styles.read_text(encoding="utf-8"))[folder.name]
    if style["writer"] == "xlsx":
        sheet = style["files"]["patient"]["file"]
        frame = pd.read_excel(folder / style["file"], sheet_name=sheet, dtype=str)
    else:
        name = style.get("file") or style["files"]["patient"]["file"]
        frame = pd.read_csv(
            folder / name,
            sep=style.get("sep") or ",",
            encoding=style.get("encoding") or "utf-8",
            dtype=str,
            keep_default_na=False,
        )
    return frame.rename(columns={v: k for k, v in style["identifiers"].items()}).fillna("")


@pytest.mark.slow
def test_neither_the_hub_nor_the_linkage_service_keeps_an_identifier_or_an_encoding(demo_out):
    """Issue 25: after the demo, the bytes of the hub's and the linkage service's databases (and
    their write-ahead logs) and every log hold no child's name or national id and no node's
    encoding, raw or in base64 or hex; the nodes do hold their encodings (so the check can
    find them)."""
    import base64

    import duckdb

    clks: list[bytes] = []
    for store in sorted((demo_out / "stores").glob("*.duckdb")):
        con = duckdb.connect(str(store), read_only=True)
        try:
            clks += [
                bytes(c) for (c,) in con.execute("SELECT clk FROM linkage_encoding").fetchall()
            ]
        finally:
            con.close()
    assert len(clks) > 1000
    words: set[str] = set()
    for folder in sorted(p for p in (demo_out / "exports").iterdir() if p.is_dir()):
        frame = _identifiers(folder)
        for col in ("family_name", "given_name", "national_id"):
            words |= {w for w in frame[col] if len(w) >= 6}
    assert len(words) > 500
    places = [p for p in demo_out.glob("hub.db*") if p.is_file()]
    places += [p for p in demo_out.glob("linkage.db*") if p.is_file()]
    places += [p for p in (demo_out / "logs").iterdir() if p.is_file()]
    assert any(p.name == "hub.db" for p in places) and any(p.name == "linkage.db" for p in places)
    for place in places:
        data = place.read_bytes()
        text = data.decode("utf-8", errors="replace")
        for clk in clks[::7]:
            assert clk not in data, place
            assert base64.b64encode(clk)[:24] not in data, place
            assert clk.hex()[:32].encode() not in data, place
        found = [w for w in words if w in text]
        assert not found, (place, found[:5])


@pytest.mark.slow
def test_every_custodian_accepts_the_registered_studies_on_a_clean_audit(demo_out):
    """The acceptance audit of the demo's registered studies (with the node's catalogue
    released before) finds nothing at any node, completely, so each custodian accepts without
    --despite-audit."""
    gov = (demo_out / "logs" / "governance.log").read_text()
    assert "--despite-audit" not in gov and "FINDING" not in gov and "incomplete" not in gov
    assert gov.count("no combination of these sets isolates fewer than min_cell records") == 6
    seconds = [float(s) for s in re.findall(r"atom\(s\), ([\d.]+) s", gov)]
    assert len(seconds) == 6 and max(seconds) < 10, seconds


@pytest.mark.slow
def test_the_demo_registers_its_studies_and_runs_them_exactly(demo_out):
    """The studies' project lists every study the demo runs; each node accepted them (their
    hashes recorded at the node) and runs under `exact_release: registered`, so the studies are
    answered exactly, nothing held; the feasibility count afterwards is perturbed, and the
    report says which is which."""
    from ccdp.federation.node.projects import load_decisions
    from ccdp.federation.study import StudySpec
    from ccdp.governance.registered import study_hash

    studies = load_studies()
    wanted = set()
    for st in studies:
        s = StudySpec.model_validate(st["spec"])
        wanted.add(study_hash(s.analysis, s.params, s.cohort_json()))
    with sqlite3.connect(demo_out / "hub.db") as db:
        rows = list(db.execute("SELECT id, spec FROM projects"))
    main = [json.loads(spec) for _, spec in rows if json.loads(spec).get("studies")]
    assert len(main) == 1 and len(main[0]["studies"]) == len(studies)
    for store in (demo_out / "stores").glob("*.duckdb"):
        policy = (store.with_name(f"{store.stem}.policy.yaml")).read_text()
        assert "exact_release: registered" in policy and "counts: perturbed" in policy
        accepted = [d for d in load_decisions(store).values() if d.terms.studies]
        assert len(accepted) == 1 and set(accepted[0].terms.studies) == wanted
        # nothing was held for the custodian: every registered study was answered as it came
        pending = store.with_name(f"{store.stem}.pending")
        assert not pending.exists() or not any(pending.iterdir())
    html = (demo_out / "report.html").read_text()
    for st in studies:
        section = html.split(f'id="{st["key"]}"')[1].split("</section>")[0]
        assert "answered it exactly" in section
        assert "Perturbed counts" not in section
    feas = html.split('id="feasibility_perturbed"')[1].split("</section>")[0]
    assert "Perturbed counts (cell-key method)" in feas and "never exact" in feas


@pytest.mark.slow
@pytest.mark.browser
def test_demo_report_renders_in_chromium(demo_out, tmp_path):
    chromium = chromium_path()
    if chromium is None:
        if under_ci():
            pytest.fail("CI is set but chromium is missing ($CCDP_CHROMIUM, PATH, /usr/bin)")
        pytest.skip("no chromium (apt-get install chromium, or set CCDP_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((demo_out / "report.html").as_uri())
        sections = page.locator("section.study")
        # + the perturbed count, the ingest table, the record linkage
        assert sections.count() == len(load_studies()) + 3
        # every plot is laid out with a real size, and the tables have rows
        boxes = [page.locator(".plot svg").nth(i).bounding_box() for i in range(4)]
        assert all(b is not None and b["width"] > 200 and b["height"] > 100 for b in boxes)
        assert page.locator("#feasibility table tbody tr").count() >= 10
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 50_000


@pytest.mark.slow
def test_hub_results_read_back_as_the_analyses_result_objects(demo_out):
    """`ccdp submit` (without --json) prints hub results through the analyses' own result models."""
    from ccdp.federation.client import study_result
    from ccdp.federation.hub.app import Hub
    from ccdp.federation.hub.db import open_database

    hub = Hub(open_database(f"sqlite:///{demo_out / 'hub.db'}"))
    kinds = {}
    for row in hub.studies():
        record = hub.study(row["id"])["result"]
        assert record["study_id"] == row["id"]  # the id `ccdp submit` printed
        back = study_result(record)
        assert back.result.model_dump(mode="json") == record["result"]
        kinds[row["analysis"]] = type(back.result).__name__
    assert kinds == {
        "count": "CountResult",  # the feasibility count, perturbed
        "crosstab": "CrosstabResult",
        "incidence": "IncidenceResult",
        "km": "KMResult",
        "cox": "CoxResult",
    }


@pytest.mark.slow
def test_keep_running_prints_the_dashboard_and_a_token_per_role(tmp_path):
    """`ccdp demo --keep-running`: the dashboard's address and a researcher, board and admin
    token; the board's token signs in and finds the pending project; Ctrl-C stops everything."""
    import signal
    import time

    import httpx

    from tests.conftest import cli_env

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-browser", "--keep-running", "--patients", "1200"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccdp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        end = time.monotonic() + 600
        while time.monotonic() < end:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if "stops the hub and the node agents" in line:
                break
        text = "".join(lines)
        url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/", text).group(1)
        tokens = dict(
            re.findall(r"^\s+(researcher|board|admin|expert)\s+(ccdp-user-\S+)$", text, re.M)
        )
        assert set(tokens) == {"researcher", "board", "admin", "expert"}
        assert re.search(r"waits for the expert board: R-", text)
        pending = re.search(r"waits for the board's review: (\S+)", text).group(1)
        with httpx.Client(base_url=url, follow_redirects=True) as web:
            form = web.get("/")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            signed = web.post("/signin", data={"token": tokens["board"], "csrf": csrf})
            assert signed.status_code == 200 and str(signed.url).endswith("/network")
            assert "Kenya" in signed.text
        me = httpx.get(
            f"{url}/api/projects/{pending}", headers={"Authorization": "Bearer " + tokens["board"]}
        )
        assert me.json()["state"] == "requested"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert running_under(out) == []
