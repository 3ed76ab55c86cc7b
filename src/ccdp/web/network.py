"""The Network page: every node, its country and status, what its catalogue says, the totals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ccdp.terminology.countries import country_name
from ccdp.web.hubapi import ApiError
from ccdp.web.pages import Signed, api, render

router = APIRouter()
ONLINE_SECONDS = (
    120  # a node agent long-polls every few seconds; two minutes of silence is "offline"
)


async def catalogues_by_node(request: Request, who: Signed) -> dict[str, dict[str, Any]]:
    """Each node's latest published catalogue (none yet: an empty map)."""
    try:
        rows = await api(request, who).get("/api/catalogues")
    except ApiError as exc:
        if exc.status == 404:
            return {}
        raise
    return {r["node"]: r for r in rows}


def released(cell: dict[str, Any] | None) -> int | None:
    if not cell or cell.get("suppressed"):
        return None
    value = cell.get("count")
    return int(value) if isinstance(value, int) else None


def online(last_seen: str | None) -> bool:
    from datetime import UTC, datetime

    if not last_seen:
        return False
    at = datetime.fromisoformat(last_seen)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - at).total_seconds() < ONLINE_SECONDS


def network_rows(
    nodes: list[dict[str, Any]], cats: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    codes = [n["country"] for n in nodes]
    names = dict(zip(codes, country_name(codes), strict=True))
    rows = []
    for n in nodes:
        cat = (cats.get(n["name"]) or {}).get("catalogue") or {}
        years = cat.get("diagnosis_years") or {}
        rows.append(
            {
                **n,
                "country_name": names.get(n["country"]) or n["country"],
                "online": online(n.get("last_seen")) and not n.get("revoked"),
                "patients": cat.get("patients"),
                "tumours": cat.get("tumours"),
                "years": (years.get("first"), years.get("last")),
                "last_ingest": cat.get("last_ingest"),
                "has_catalogue": bool(cat),
            }
        )
    return rows


def country_tiles(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tile per country: its nodes, how many are online, the patients their catalogues release."""
    tiles: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = tiles.setdefault(
            r["country"],
            {
                "code": r["country"],
                "name": r["country_name"],
                "nodes": 0,
                "online": 0,
                "patients": 0,
                "hidden": 0,
            },
        )
        t["nodes"] += 1
        t["online"] += int(r["online"])
        n = released(r["patients"])
        if n is None:
            t["hidden"] += 1
        else:
            t["patients"] += n
    return sorted(tiles.values(), key=lambda t: t["name"])


@router.get("/network", response_class=HTMLResponse)
async def network_page(request: Request, who: Signed) -> HTMLResponse:
    nodes = await api(request, who).get("/api/nodes")
    cats = await catalogues_by_node(request, who)
    rows = network_rows(nodes, cats)
    tiles = country_tiles(rows)
    totals = {
        "nodes": len(rows),
        "online": sum(r["online"] for r in rows),
        "countries": len(tiles),
        "patients": sum(released(r["patients"]) or 0 for r in rows),
        "tumours": sum(released(r["tumours"]) or 0 for r in rows),
        "unreported": sum(1 for r in rows if released(r["patients"]) is None),
    }
    return render(request, "network.html", who, rows=rows, tiles=tiles, totals=totals)
