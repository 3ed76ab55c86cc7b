"""The CCDI Federation API v1.3.0 at the hub (a feature), under its own prefix `/ccdi`.

An aggregate-only source: every count is read from the nodes' latest published catalogues,
which each node computed and released through its own disclosure gate and ledger (the
feasibility tier: perturbed, declared levels only); the hub asks no node anything for it, so a
CCDI request releases nothing new and repeating or varying it gains nothing. The mapping is
`ccdp.exchange.ccdi` (pure); this module reads the catalogues and answers HTTP.

The routes are public, as the CCDI spec is (it defines no authentication and tells a server
that cannot share records to answer 404, never 401/403): they show only counts the nodes
already published to the hub. Errors are the spec's `responses.Errors` body, never the hub's,
and a bad parameter is a 422, never a 500. docs/exchange/ccdi.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ccdp import __version__
from ccdp.exchange import ccdi
from ccdp.federation.hub.catalogues import Catalogues
from ccdp.federation.hub.context import HubContext

PREFIX = "/ccdi"
TAG = "CCDI Federation API (aggregate only)"
OTHER_METHODS = ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY", "CONNECT"]


class Ccdi:
    """The CCDI view of the published catalogues."""

    def __init__(
        self,
        context: HubContext,
        catalogues: Catalogues,
        contact_email: str = ccdi.CONTACT_EMAIL,
    ) -> None:
        self.context = context
        self.catalogues = catalogues
        self.contact_email = contact_email

    def nodes(self) -> list[ccdi.NodeCounts]:
        """Every node with a published catalogue, served or not (sorted by name)."""
        return [ccdi.node_counts(p) for p in self.catalogues.all()]

    def served(self) -> list[ccdi.NodeCounts]:
        return [n for n in self.nodes() if n.perturbed]

    def namespace(self, organization: str, name: str) -> dict[str, Any]:
        if organization == ccdi.ORGANIZATION:
            for node in self.nodes():
                if ccdi.namespace_name(node.node) == name:
                    return ccdi.namespace(node, self.contact_email)
        raise ccdi.not_found(f"Namespace {organization!r}/{name!r}")

    def info(self) -> dict[str, Any]:
        return ccdi.information(self.nodes(), self.context.clock(), __version__, self.contact_email)


def _answer(make: Callable[[], Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """The body `make` builds, or the spec's error body of the CcdiError it raises."""
    try:
        return JSONResponse(make(), headers=headers)
    except ccdi.CcdiError as exc:
        return JSONResponse(exc.body, status_code=exc.status)


def _link(request: Request) -> str:
    """The `link` header of a one-page result: first and last are page 1."""
    query = dict(request.query_params)
    query["page"] = "1"
    url = str(request.url.replace(query=urlencode(query)))
    return f'<{url}>; rel="first", <{url}>; rel="last"'


def router(feature: Callable[[], Ccdi], api: APIRouter | None = None) -> APIRouter:
    """The CCDI routes; `feature` gives the Ccdi object at request time."""
    api = api if api is not None else APIRouter()

    def get(path: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A GET route under the prefix; its name (and operation id) is the path's."""
        name = "ccdi" + path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_")
        api.add_api_route(
            PREFIX + path,
            _wrong_method,
            methods=OTHER_METHODS,
            include_in_schema=False,
            name=f"{name}_other",
        )
        return api.get(
            PREFIX + path,
            tags=[TAG],
            summary=summary,
            name=name,
            operation_id=name,
            response_class=JSONResponse,
        )

    @get("/info", "This source: who serves it, the API version, and that it shares no records")
    def info() -> JSONResponse:
        return _answer(lambda: feature().info())

    @get("/namespace", "One namespace per node with a published catalogue")
    def namespaces() -> JSONResponse:
        return _answer(
            lambda: [ccdi.namespace(n, feature().contact_email) for n in feature().nodes()]
        )

    @get("/namespace/{organization}/{namespace}", "One node's namespace (404 if unknown)")
    def namespace(organization: str, namespace: str) -> JSONResponse:
        return _answer(lambda: feature().namespace(organization, namespace))

    @get("/organization", "The one organization: the partnership")
    def organizations() -> JSONResponse:
        return _answer(lambda: [ccdi.organization()])

    @get("/organization/{name}", "The partnership's organization (404 for any other name)")
    def organization(name: str) -> JSONResponse:
        def make() -> dict[str, Any]:
            if name != ccdi.ORGANIZATION:
                raise ccdi.not_found(f"Organization {name!r}")
            return ccdi.organization()

        return _answer(make)

    for entity in ccdi.ENTITIES:
        _entity_routes(api, get, feature, entity)

    @get("/subject-diagnosis", "Refused: this source shares no records (404 UnshareableData)")
    def subject_diagnosis(request: Request) -> JSONResponse:
        return _answer(lambda: _refuse_list(request, "Subjects"))

    @get("/sample-diagnosis", "Refused: this source shares no records (404 UnshareableData)")
    def sample_diagnosis(request: Request) -> JSONResponse:
        return _answer(lambda: _refuse_list(request, "Samples"))

    return api


def _wrong_method(request: Request) -> JSONResponse:
    """Any method but GET on a CCDI path: 405 with `Allow` and the spec's `InvalidRoute`."""
    method, route = request.method[:20], request.url.path[:200]
    error = {
        "kind": "InvalidRoute",
        "method": method,
        "route": route,
        "message": f"Invalid route: {method} {route} (only GET is supported)",
    }
    return JSONResponse({"errors": [error]}, status_code=405, headers={"Allow": "GET, HEAD"})


def _refuse_list(request: Request, entity: str) -> Any:
    """A record list: its parameters checked (422), then refused (404 UnshareableData)."""
    q = request.query_params
    ccdi.page_params(q.get("page"), q.get("per_page"))
    raise ccdi.unshareable(entity)


def _entity_routes(
    api: APIRouter,
    get: Callable[[str, str], Callable[[Callable[..., Any]], Callable[..., Any]]],
    feature: Callable[[], Ccdi],
    entity: str,
) -> None:
    """An entity's count, summary, fields, list and show routes (count before show: both are
    four segments long)."""
    plural = entity.capitalize() + "s"

    @get(f"/{entity}/by/{{field}}/count", f"{plural} by a field: perturbed counts, summed")
    def by_count(field: str) -> JSONResponse:
        return _answer(lambda: ccdi.by_count(entity, field, feature().served()))

    @get(f"/{entity}/summary", f"The number of {entity}s (perturbed counts, summed)")
    def summary() -> JSONResponse:
        return _answer(lambda: ccdi.summary(entity, feature().served()))

    @get(f"/metadata/fields/{entity}", f"The {entity} fields served for counts")
    def fields() -> JSONResponse:
        return _answer(lambda: ccdi.field_descriptions(entity))

    @get(f"/{entity}", f"{plural}: none listed (404 UnshareableData; files: an empty page)")
    def index(request: Request) -> JSONResponse:
        if entity != "file":
            return _answer(lambda: _refuse_list(request, plural))
        q = request.query_params

        def page() -> dict[str, Any]:
            ccdi.page_params(q.get("page"), q.get("per_page"))
            return ccdi.empty_page()

        return _answer(page, headers={"link": _link(request)})

    @get(f"/{entity}/{{organization}}/{{namespace}}/{{name}}", f"One {entity}: never shown")
    def show(organization: str, namespace: str, name: str) -> JSONResponse:
        def make() -> Any:
            if entity == "file":
                raise ccdi.not_found(f"File with namespace {namespace!r} and name {name!r}")
            raise ccdi.unshareable(plural)

        return _answer(make)
