"""The hub's seams hold: its core never imports a feature, no feature imports the core or another
feature (both share only the context and the doors), the hub never imports the web dashboard,
and governance never imports the hub (issue 22)."""

from __future__ import annotations

import grimp
import pytest

HUB = "ccdp.federation.hub"
FEATURES = {
    f"{HUB}.{m}" for m in ("projects", "trials", "referrals", "catalogues", "auditlog", "board")
}
CORE = {f"{HUB}.{m}" for m in ("service", "members", "routes", "runner")}
SHARED = {f"{HUB}.{m}" for m in ("context", "doors", "audit", "auth", "models", "urls")}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("ccdp")


def imports(graph, module: str) -> set[str]:
    return set(graph.find_modules_directly_imported_by(module))


def test_the_core_and_what_it_shares_import_no_feature(graph) -> None:
    seen = {(m, i) for m in CORE | SHARED for i in imports(graph, m) if i in FEATURES}
    assert not seen


def test_a_feature_imports_neither_the_core_nor_another_feature(graph) -> None:
    seen = {
        (f, i)
        for f in FEATURES
        for i in imports(graph, f)
        if i in CORE or (i in FEATURES and i != f) or i == f"{HUB}.app"
    }
    assert not seen


def test_the_hub_imports_nothing_of_the_web(graph) -> None:
    hub = graph.find_descendants(HUB) | {HUB}
    seen = {(m, i) for m in hub for i in imports(graph, m) if i.split(".")[:2] == ["ccdp", "web"]}
    assert not seen


def test_governance_imports_nothing_of_the_hub(graph) -> None:
    seen = {
        (m, i)
        for m in graph.find_descendants("ccdp.governance")
        for i in imports(graph, m)
        if i == HUB or i.startswith(HUB + ".")
    }
    assert not seen
