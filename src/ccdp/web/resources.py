"""The Resources page: the nodes' published catalogues side by side (the partnership's resource
map): who holds which tumours, how complete each field is, which years, which specimens.

Everything here is what each node's own disclosure gate released in its catalogue; a suppressed
count is shown as suppressed, never inferred from totals.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ccdp.web.network import catalogues_by_node
from ccdp.web.pages import Signed, need_page, render

router = APIRouter()


def heat_class(pct: float | None) -> str:
    """A CSS bucket for a completeness percentage (tenths; none when not released)."""
    if pct is None:
        return "hnone"
    return f"h{max(0, min(10, int(pct // 10)))}"


def cell_rows(
    cats: dict[str, dict[str, Any]], key: str, label_key: str = "level"
) -> list[dict[str, Any]]:
    """One row per category of `key` (in the first catalogue's order, the classification's),
    one cell per node (None where a node's catalogue lacks the category)."""
    order: list[str] = []
    labels: dict[str, str] = {}
    per_node: dict[str, dict[str, dict[str, Any]]] = {}
    for node, cat in cats.items():
        for cell in cat.get(key) or []:
            level = str(cell.get(label_key))
            if level not in labels:
                order.append(level)
                labels[level] = str(cell.get("label") or level)
            per_node.setdefault(node, {})[level] = cell
    return [
        {"level": lv, "label": labels[lv], "cells": [per_node.get(n, {}).get(lv) for n in cats]}
        for lv in order
    ]


def completeness_rows(cats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each table.field any node holds, with each node's completeness (None: not held/released)."""
    order: list[tuple[str, str]] = []
    values: dict[tuple[str, str], dict[str, float | None]] = {}
    for node, cat in cats.items():
        for table in cat.get("tables") or []:
            for f in table.get("fields") or []:
                k = (table["name"], f["name"])
                if k not in values:
                    order.append(k)
                    values[k] = {}
                values[k][node] = f.get("completeness")
    return [
        {
            "table": t,
            "field": f,
            "cells": [
                {"pct": values[(t, f)].get(n), "cls": heat_class(values[(t, f)].get(n))}
                for n in cats
            ],
        }
        for t, f in order
    ]


@router.get("/resources", response_class=HTMLResponse)
async def resources_page(request: Request, who: Signed, group: str | None = None) -> HTMLResponse:
    need_page(who, "/resources")
    rows = await catalogues_by_node(request, who)
    cats = {n: r["catalogue"] for n, r in sorted(rows.items()) if r.get("catalogue")}
    groups = cell_rows(cats, "by_iccc_group")
    shown = [g for g in groups if not group or g["level"] == group]
    return render(
        request,
        "resources.html",
        who,
        nodes=list(cats),
        cats=cats,
        received={n: rows[n].get("received_at") for n in cats},
        groups=groups,
        shown=shown,
        group=group or "",
        sexes=cell_rows(cats, "by_sex"),
        ages=cell_rows(cats, "by_age_group"),
        specimens=cell_rows(cats, "specimens", "type"),
        completeness=completeness_rows(cats),
    )
