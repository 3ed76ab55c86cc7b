"""The Resources page shows each node's published catalogue as the API gives it: the counts a
node released, suppressed cells as suppressed, nothing the catalogue does not hold."""

from __future__ import annotations

from typing import Any

import httpx

from ccdp.demo.partnership import Partnership
from tests.federation.netutil import wait_until
from tests.web.conftest import screenshot, sign_in


def catalogues(p: Partnership) -> dict[str, dict[str, Any]]:
    """Every node's catalogue, through the public API (what a script sees)."""
    auth = {"Authorization": f"Bearer {p.people['researcher']}"}

    def all_published() -> dict[str, dict[str, Any]] | None:
        rows = httpx.get(f"{p.url}/api/catalogues", headers=auth, timeout=30).json()
        got = {r["node"]: r["catalogue"] for r in rows}
        # the demo's custodians set `consent: statutory` after their agents started: each
        # agent publishes again when its policy changes, and the catalogue says the new one
        fresh = all(c["policy"]["consent"] == "statutory" for c in got.values())
        return got if set(got) == set(p.nodes) and fresh else None

    return wait_until(all_published, timeout=60, every=0.5)


def test_resources_show_each_countrys_tumours_by_iccc_group(page: Any, partnership: Partnership):
    cats = catalogues(partnership)
    sign_in(page, partnership, "researcher")
    page.get_by_role("link", name="Resources").click()
    table = page.locator("#iccc-table")
    for node, cat in cats.items():
        for cell in cat["by_iccc_group"]:
            shown = table.locator(f"tr[data-level='{cell['level']}'] td[data-node='{node}']")
            want = "suppressed" if cell["suppressed"] else f"{cell['count']:,}"
            assert shown.inner_text().strip() == want, (node, cell)
    # leukaemias are the commonest childhood cancer: every node releases a count for group I
    assert all(
        not next(c for c in cat["by_iccc_group"] if c["level"] == "I")["suppressed"]
        for cat in cats.values()
    )
    # filter to one group: only its row is left
    page.get_by_label("Show ICCC-3 group").select_option("I")
    page.get_by_role("button", name="Filter").click()
    assert table.locator("tbody tr").count() == 1
    assert table.locator("tbody tr").get_attribute("data-level") == "I"
    page.get_by_label("Show ICCC-3 group").select_option("")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#completeness-table td.heat").count() > 0
    assert page.locator("#overview-table").inner_text().count("consent statutory") == 3
    screenshot(page, "resources", full_page=False)


def test_network_totals_are_the_sum_of_released_patient_counts(page: Any, partnership: Partnership):
    cats = catalogues(partnership)
    released = [c["patients"]["count"] for c in cats.values() if not c["patients"]["suppressed"]]
    sign_in(page, partnership, "board")
    total = page.locator("[data-total='patients']").inner_text().replace(",", "")
    assert int(total) == sum(released) > 0
    for node, cat in cats.items():
        row = page.locator(f"#node-table tr[data-node='{node}']")
        years = cat["diagnosis_years"]
        assert f"{years['first']}–{years['last']}" in row.inner_text()
