"""The dashboard on a phone (390 × 844 CSS pixels): no page is wider than the screen (wide tables
scroll in their own box), and every visible text has a contrast of at least 4.5:1 on what is
behind it (3:1 for large text), as WCAG 2.1 AA asks; so has the text drawn in the figures (the
KM plot's numbers at risk, in the group colours)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ccdp.analyses.plots import PALETTE
from ccdp.demo.partnership import Partnership
from ccdp.federation.client import HubClient
from tests.web.conftest import Outside, sign_in

PHONE = {"width": 390, "height": 844}
AA, AA_LARGE = 4.5, 3.0

# Every visible element's own text: its colour composited over the first opaque background
# behind it (ancestors' translucent backgrounds and opacity composited on the way), its size.
TEXTS_JS = """
() => {
  const rgba = s => {
    const m = s.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat([1]);
  };
  const background = el => {
    const layers = [];
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      opacity *= Number(cs.opacity);
      const bg = rgba(cs.backgroundColor);
      if (bg && bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
    }
    let colour = [255, 255, 255, 1];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return [colour, opacity];
  };
  const out = [];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes]
      .filter(n => n.nodeType === Node.TEXT_NODE)
      .map(n => n.textContent.trim())
      .join(" ")
      .trim();
    if (!own || ["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE"].includes(el.tagName)) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility !== "visible" || el.getClientRects().length === 0) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || box.right < 0 || box.bottom < 0) continue;
    const [bg, opacity] = background(el);
    const fg = rgba(cs.color);
    fg[3] *= opacity;
    out.push({
      text: own.slice(0, 60),
      tag: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (el.className && typeof el.className === "string" ? "." + el.className : ""),
      fg: over(fg, bg),
      bg: bg,
      size: parseFloat(cs.fontSize),
      weight: Number(cs.fontWeight),
    });
  }
  return out;
}
"""


def luminance(rgb: tuple[float, ...]) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour (0–255 channels)."""

    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """WCAG 2.1 contrast ratio, (L1 + 0.05) / (L2 + 0.05) with L1 the lighter."""
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    h = colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def test_the_contrast_formula_matches_wcag_examples() -> None:
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((118, 118, 118), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)  # #767676
    assert contrast((255, 255, 255), (255, 255, 255)) == pytest.approx(1.0)


def test_every_group_colour_reads_as_text_on_white() -> None:
    """The KM plot writes each group's numbers at risk in the group's colour on white."""
    weak = {c: round(contrast(hex_rgb(c), (255, 255, 255)), 2) for c in PALETTE}
    assert all(r >= AA for r in weak.values()), weak
    assert len(set(PALETTE)) == len(PALETTE)


def failures(texts: list[dict[str, Any]]) -> list[str]:
    bad = []
    for t in texts:
        large = t["size"] >= 24 or (t["size"] >= 18.66 and t["weight"] >= 700)
        ratio = contrast(tuple(t["fg"]), tuple(t["bg"]))
        if ratio < (AA_LARGE if large else AA):
            bad.append(f"{t['tag']} {t['text']!r}: {ratio:.2f} ({t['fg']} on {t['bg']})")
    return bad


@pytest.fixture
def phone(browser: Any, partnership: Partnership) -> Iterator[Any]:
    """A fresh phone-sized browser context, kept on the hub as the `page` fixture is."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True)
    pg = context.new_page()
    outside = Outside(partnership.url)
    pg.on("request", lambda req: outside.see(req.url))
    pg.set_default_timeout(20_000)
    yield pg
    context.close()
    assert outside.requests == [], f"the page requested outside the hub: {outside.requests}"


@pytest.fixture(scope="module")
def km_study(partnership: Partnership) -> str:
    """A finished KM study by country (its page shows the plot and the number-at-risk table)."""
    client = HubClient(partnership.url, partnership.people["researcher"])
    spec = {
        "title": "OS by country (phone test)",
        "analysis": "km",
        "outcome": "os",
        "by": ["country"],
        "project": partnership.projects.studies,
    }
    study_id = client.submit(spec)
    assert client.wait(study_id, max_wait=180, poll=5)["status"] == "done"
    return study_id


def check(page: Any, where: str) -> list[str]:
    """What is wrong with the page as shown: overflow and too little contrast."""
    page.wait_for_load_state("load")
    problems = []
    width = page.evaluate("() => document.documentElement.scrollWidth")
    if width > PHONE["width"]:
        wide = page.evaluate(
            """() => [...document.body.querySelectorAll('*')]
                .filter(e => e.getBoundingClientRect().right > 391)
                .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '')
                  + ' ' + Math.round(e.getBoundingClientRect().right))"""
        )
        problems.append(f"{where}: the page is {width} px wide at 390 ({wide})")
    problems += [f"{where}: {f}" for f in failures(page.evaluate(TEXTS_JS))]
    return problems


def test_researcher_pages_fit_a_phone_and_read_well(
    phone: Any, partnership: Partnership, km_study: str
) -> None:
    phone.goto(partnership.url + "/")
    problems = check(phone, "sign-in")
    sign_in(phone, partnership, "researcher", "/network")
    for path in ("/network", "/resources", "/studies", "/studies/new", "/governance/request"):
        phone.goto(partnership.url + path)
        problems += check(phone, path)
    phone.goto(partnership.url + f"/studies/{km_study}")
    phone.locator("#table-at_risk").wait_for()
    phone.locator("#plot-0").wait_for()
    problems += check(phone, "/studies/<km>")
    phone.goto(partnership.url + "/feasibility")
    problems += check(phone, "/feasibility")
    phone.get_by_role("button", name="Count by country").click()
    phone.locator("#count-table").wait_for(timeout=90_000)
    problems += check(phone, "/feasibility (counts)")
    assert problems == [], "\n".join(problems)


def test_board_admin_and_expert_pages_fit_a_phone_and_read_well(
    phone: Any, partnership: Partnership
) -> None:
    problems: list[str] = []
    for role, paths in (
        ("board", ["/governance"]),
        ("admin", ["/governance", "/governance/audit"]),
        ("expert", ["/referrals", f"/referrals/{partnership.referral}"]),
    ):
        phone.context.clear_cookies()
        sign_in(phone, partnership, role, paths[0])
        for path in paths:
            phone.goto(partnership.url + path)
            problems += check(phone, f"{role} {path}")
    assert problems == [], "\n".join(problems)


def test_the_km_figure_writes_its_text_in_readable_colours(
    phone: Any, partnership: Partnership, km_study: str
) -> None:
    """The served SVG of the KM plot: every text (tick labels, legend, numbers at risk) is
    filled with a colour of at least 4.5:1 on the figure's white."""
    sign_in(phone, partnership, "researcher", "/studies")
    cookie = next(c for c in phone.context.cookies() if c["name"] == "ccdp_session")
    svg = httpx.get(
        f"{partnership.url}/studies/{km_study}/plots/0.svg",
        cookies={"ccdp_session": cookie["value"]},
    ).text
    fills = set()
    for block in re.findall(r'<g id="text_\d+">(.*?)</g>', svg, flags=re.S):
        fills |= set(re.findall(r"fill:\s*(#[0-9a-fA-F]{6})", block))
    assert len(fills) >= len(partnership.nodes)  # one colour per country at least
    weak = {f: round(contrast(hex_rgb(f), (255, 255, 255)), 2) for f in fills}
    assert all(r >= AA for r in weak.values()), weak
