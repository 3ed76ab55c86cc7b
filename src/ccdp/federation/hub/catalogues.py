"""Node catalogues at the hub (a feature): each node publishes its latest catalogue, computed and
disclosure-checked at the node; researchers read them (the resource map); the node list shows a
headline of each (through the context's `node_details` hook, so the core never reads catalogues).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError

from ccdp.federation.hub.context import Forbidden, HubContext, NodeDetail, NotFound, Principal
from ccdp.federation.hub.doors import AsNode, AsUser
from ccdp.federation.hub.models import CatalogueRow, NodeRow
from ccdp.wire.catalogue import Catalogue
from ccdp.wire.protocol import utcnow


class Catalogues:
    """The latest catalogue of each node, over the hub's database."""

    def __init__(self, context: HubContext) -> None:
        self.context = context
        context.node_details["catalogue"] = HEADLINE

    def publish(self, node: Principal, catalogue: Catalogue) -> dict[str, Any]:
        """Keep `catalogue` as the node's latest (validated already; its `node` must be the
        token's node), audited as "catalogue.published"."""
        if catalogue.node != node.name:
            with self.context.sessions.begin() as s:
                self.context.audit(
                    s,
                    f"node:{node.name}",
                    "catalogue.refused",
                    reason="the catalogue names another node",
                )
            raise Forbidden(
                f"node {node.name} cannot publish a catalogue of node {catalogue.node[:100]!r}"
            )
        body = catalogue.model_dump(mode="json")
        try:
            return self._store_catalogue(node, body)
        except IntegrityError:  # two first publications at once: the second one updates
            return self._store_catalogue(node, body)

    def _store_catalogue(self, node: Principal, body: dict[str, Any]) -> dict[str, Any]:
        now = utcnow()
        with self.context.sessions.begin() as s:
            row = s.scalars(
                select(CatalogueRow).where(CatalogueRow.node_id == node.id).with_for_update()
            ).first()
            if row is None:
                s.add(CatalogueRow(node_id=node.id, catalogue=body, received_at=now))
            else:
                row.catalogue, row.received_at = body, now
            self.context.audit(
                s,
                f"node:{node.name}",
                "catalogue.published",
                generated_at=body["generated_at"],
                last_ingest=body["last_ingest"],
            )
        return {"node": node.name, "received_at": now.isoformat()}

    def all(self) -> list[dict[str, Any]]:
        """Every node's latest catalogue: node, country (the hub's registration), received_at."""
        with self.context.sessions() as s:
            rows = s.execute(
                select(CatalogueRow, NodeRow)
                .join(NodeRow, NodeRow.id == CatalogueRow.node_id)
                .order_by(NodeRow.name)
            ).all()
            return [_published(c, n) for c, n in rows]

    def show(self, name: str) -> dict[str, Any]:
        with self.context.sessions() as s:
            found = s.execute(
                select(CatalogueRow, NodeRow)
                .join(NodeRow, NodeRow.id == CatalogueRow.node_id)
                .where(NodeRow.name == name)
            ).first()
            if found is None:
                raise NotFound(f"no catalogue of node {name[:100]!r}")
            return _published(*found)


def _published(row: CatalogueRow, node: NodeRow) -> dict[str, Any]:
    return {
        "node": node.name,
        "country": node.country,
        "received_at": row.received_at.isoformat(),
        "catalogue": row.catalogue,
    }


def _headline(row: Row[Any]) -> dict[str, Any] | None:
    """What the node list shows of a node's catalogue (None: never published), out of the
    columns of `HEADLINE`."""
    if row.catalogue_received_at is None:
        return None
    return {
        "patients": row.catalogue_patients,
        "last_ingest": row.catalogue_last_ingest,
        "generated_at": row.catalogue_generated_at,
        "received_at": row.catalogue_received_at.isoformat(),
    }


# The node list's hook: only the three fields it shows out of each stored body (JSON paths in
# SQL), never the whole catalogue, read in the node list's own statement.
HEADLINE = NodeDetail(
    source=CatalogueRow.__table__,
    columns=(
        CatalogueRow.received_at.label("catalogue_received_at"),
        CatalogueRow.catalogue[("patients", "count")].label("catalogue_patients"),
        CatalogueRow.catalogue["last_ingest"].label("catalogue_last_ingest"),
        CatalogueRow.catalogue["generated_at"].label("catalogue_generated_at"),
    ),
    value=_headline,
)


def router(catalogues: Callable[[], Catalogues], api: APIRouter | None = None) -> APIRouter:
    """The catalogue routes; `catalogues` gives the feature at request time."""
    api = api if api is not None else APIRouter()

    @api.put("/api/node/catalogue", tags=["node"])
    def node_catalogue(body: Catalogue, node: AsNode) -> dict[str, Any]:
        """Publish this node's catalogue (computed and disclosure-checked at the node); the
        hub keeps the latest one. A catalogue naming another node is refused (403)."""
        return catalogues().publish(node, body)

    @api.get("/api/catalogues", tags=["researcher"])
    def list_catalogues(_user: AsUser) -> list[dict[str, Any]]:
        """Every node's latest catalogue (the resource map): node, country, received_at,
        catalogue."""
        return catalogues().all()

    @api.get("/api/catalogues/{node}", tags=["researcher"])
    def show_catalogue(node: str, _user: AsUser) -> dict[str, Any]:
        """One node's latest catalogue (404 if it has published none)."""
        return catalogues().show(node)

    return api
