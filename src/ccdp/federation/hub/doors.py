"""The HTTP doors every router of the hub shares: bearer tokens, role checks, strict bodies and
the one shape of a refusal.

Three doors: node routes (`/api/node/…`) accept only node tokens, researcher routes (`/api/…`)
only user tokens, admin routes (`/api/admin/…`) only admin users. The core's router and each
feature's router import these, so a feature's routes are guarded exactly like the core's. A token
is checked by the hub the app serves (`app.state.hub`, set by `create_app`).
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ccdp.errors import CcdpError, SpecError
from ccdp.federation.hub.context import Conflict, Forbidden, NotFound, Principal
from ccdp.federation.hub.db import saw_database_away
from ccdp.federation.hub.looppg import DatabaseAway
from ccdp.wire.errors import MalformedSummary

bearer = HTTPBearer(auto_error=False, description="A node or user token from `ccdp hub add-…`")

MAX_DETAIL = 500  # characters of an error's summary line: an input is never echoed in full


class Strict(BaseModel):
    """A request or response body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


async def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The node or user holding the request's bearer token (401 without a live one). Checked
    afresh on every request (no cache: a revoked token is refused at once), awaited on the
    event loop (`check_token`: the hub's read needs no thread hop, tokenbook.py)."""
    return known(await request.app.state.hub.check_token(bearer_token(creds)))


def bearer_token(creds: HTTPAuthorizationCredentials | None) -> str:
    """The request's token (401 for a request without one)."""
    if creds is None:
        raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    return creds.credentials


def known(who: Principal | None) -> Principal:
    """The token's holder (401 when the token is unknown or revoked)."""
    if who is None:
        raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    return who


def admit(who: Principal, kind: str, *roles: str) -> Principal:
    """`who` if it is a `kind` token (and, for users, holds one of `roles`), else 403."""
    if who.kind != kind:
        raise HTTPException(403, f"a {who.kind} token cannot be used on {kind} routes")
    if roles and who.role not in roles:
        raise HTTPException(403, f"this route needs the {' or '.join(roles)} role, not {who.role}")
    return who


def need(kind: str, *roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only `kind` tokens (and, for users, one of `roles`)."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        """Pure logic on the event loop (a sync dependency would cost a thread hop)."""
        return admit(who, kind, *roles)

    return check


AsAnyone = Annotated[Principal, Depends(principal)]
AsNode = Annotated[Principal, Depends(need("node"))]
AsUser = Annotated[Principal, Depends(need("user"))]
AsAdmin = Annotated[Principal, Depends(need("user", "admin"))]
# the board reviews projects and runs no study; researchers request and run, never review
AsResearcher = Annotated[Principal, Depends(need("user", "researcher", "admin"))]
AsBoard = Annotated[Principal, Depends(need("user", "board"))]


def one_line(text: str) -> str:
    """An error message as one line of bounded length (a long input it quotes is cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_DETAIL else flat[: MAX_DETAIL - 1] + "…"


def error_body(detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every refusal of the hub: `detail`, one line saying what is wrong, and `errors`, each
    with the `loc` (where) and `msg` (what), never the value that was sent."""
    return {"detail": one_line(detail), "errors": errors or []}


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """FastAPI's validation errors without their `input` (it may be huge or a secret)."""
    errors = []
    for err in exc.errors():
        msg = one_line(str(err.get("msg", "invalid")).removeprefix("Value error, "))
        loc = [p if isinstance(p, int) else str(p)[:64] for p in err["loc"]]
        errors.append({"loc": loc, "msg": msg})
    if not errors:
        return error_body("the request is invalid")
    first = errors[0]
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return error_body(detail, errors)


def add_error_handlers(app: FastAPI) -> None:
    """Every error as `error_body`: the hub's own (404, 409, 403, 422, else 400), FastAPI's
    validation errors (422, without the input), Starlette's 404/405 (naming the path), and the
    database being unreachable (503)."""

    @app.exception_handler(CcdpError)
    async def _ccdp_error(_req: Request, exc: CcdpError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
        if isinstance(exc, Forbidden):
            code = 403
        errors = None
        if isinstance(exc, SpecError | MalformedSummary):
            code = 422
            errors = [{"loc": ["body"], "msg": one_line(str(exc))}]
        return JSONResponse(error_body(str(exc), errors), status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {req.url.path[:200]}"
        elif exc.status_code == 405:
            detail = f"{req.method[:20]} is not allowed on {req.url.path[:200]}"
        return JSONResponse(error_body(detail), status_code=exc.status_code, headers=exc.headers)

    async def _database_away(_req: Request, _exc: Exception) -> JSONResponse:
        """The database is down, restarting or cut off: 503 with Retry-After (try again),
        never a 500 (nothing is wrong with the request or the hub's code)."""
        saw_database_away()  # the pool's connections are pinged before their next use
        body = error_body("the hub's database is unavailable: try again shortly")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})

    app.add_exception_handler(OperationalError, _database_away)
    app.add_exception_handler(DatabaseAway, _database_away)
    app.add_exception_handler(InterfaceError, _database_away)
