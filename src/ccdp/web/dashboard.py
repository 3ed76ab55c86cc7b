"""The partnership's dashboard, served by the hub at `/` (the API stays under `/api/`).

Server-rendered pages (Jinja2) with htmx (vendored, `static/`) where a page updates in place;
every page works without script. Every asset comes from the hub itself, so the dashboard works
air-gapped, and a strict Content-Security-Policy lets a page load nothing from anywhere else.
"""

from __future__ import annotations

import inspect
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccdp.web import feasibility, governance, network, projectform, referrals, resources, studies
from ccdp.web.hubapi import ApiError, HubApi
from ccdp.web.pages import (
    HERE,
    Forbidden,
    SignInNeeded,
    api_error_page,
    current,
    error_page,
    render,
    safe_next,
    sessions,
    sign_in_redirect,
)
from ccdp.web.sessions import COOKIE, PRE_COOKIE, Sessions

# no inline script, no other origin; plots are <img> of the hub's own SVG/PNG routes
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_page(path: str) -> bool:
    return not (path.startswith("/api/") or path.startswith("/docs") or path == "/openapi.json")


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"


class PageHeaders:
    """ASGI middleware: a page's response gets PAGE_HEADERS (those it does not set itself).
    Plain ASGI rather than `@app.middleware("http")`, whose per-request task and streams cost
    every API call more than the route itself (benchmarks/load/bench_reads.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in PAGE_HEADERS.items():
                    if k not in headers:
                        headers.append(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_dashboard(app: FastAPI, session_store: Sessions | None = None) -> None:
    """Add the dashboard's pages, its static files and its sessions to the hub's app."""
    hub = getattr(app.state, "hub", None)  # sessions in the hub's database: every worker's
    if session_store is None and hub is not None:
        session_store = Sessions(clock=hub.context.clock, db=hub.context.sessions)
    app.state.sessions = session_store or Sessions()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="web-static")

    app.add_middleware(PageHeaders)

    api_http_error = app.exception_handlers.get(StarletteHTTPException)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> Response:
        """A page's 404 or 405 is a page; the API's stay JSON (its own handler)."""
        if is_page(req.url.path) and api_http_error is not None:
            if exc.status_code == 404:
                return error_page(req, current(req), 404, f"There is no page {req.url.path[:200]}.")
            if exc.status_code == 405:
                return error_page(req, current(req), 405, f"{req.method[:10]} is not allowed here.")
        if api_http_error is None:
            raise exc
        answer = api_http_error(req, exc)
        return await answer if inspect.isawaitable(answer) else answer

    @app.exception_handler(SignInNeeded)
    async def _sign_in(_req: Request, exc: SignInNeeded) -> Response:
        return sign_in_redirect(exc.next_path)

    @app.exception_handler(Forbidden)
    async def _forbidden(req: Request, exc: Forbidden) -> Response:
        return error_page(req, current(req), 403, str(exc))

    @app.exception_handler(ApiError)
    async def _api_error(req: Request, exc: ApiError) -> Response:
        return api_error_page(req, current(req), exc)

    @app.get("/", include_in_schema=False)
    async def sign_in_page(request: Request, next: str | None = None) -> Response:
        if current(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return _sign_in_form(request, safe_next(next))

    @app.post("/signin", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        next_path = safe_next(fields.get("next"))
        pre = request.cookies.get(PRE_COOKIE)
        if not pre or not secrets.compare_digest(pre, fields.get("csrf", "")):
            return _sign_in_form(request, next_path, "The sign-in form expired: try again.", 403)
        token = fields.get("token", "").strip()
        if not token:
            return _sign_in_form(request, next_path, "Paste your hub token to sign in.", 422)
        try:
            me = await HubApi(request.app, token).get("/api/me")
        except ApiError as exc:
            msg = f"The hub refused that token: {exc.detail}."
            return _sign_in_form(request, next_path, msg, 401)
        if me.get("kind") != "user":
            msg = "A node token cannot sign in: use a person's token (researcher, board or admin)."
            return _sign_in_form(request, next_path, msg, 403)
        sid, _ = sessions(request).open(token, me["name"], me["role"])
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
            path="/",
            max_age=int(sessions(request).lifetime),
        )
        response.delete_cookie(PRE_COOKIE, path="/")
        return response

    @app.post("/signout", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        from ccdp.web.pages import checked_form

        who = current(request)
        if who is not None:
            await checked_form(request, who)
        sessions(request).close(request.cookies.get(COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    for module in (network, resources, feasibility, studies, governance, projectform, referrals):
        app.include_router(module.router, include_in_schema=False)


def _sign_in_form(
    request: Request, next_path: str, error: str | None = None, status: int = 200
) -> Response:
    """The sign-in page, with a fresh double-submit CSRF token in a cookie and in the form."""
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        None,
        status_code=status,
        signin_csrf=token,
        next_path=next_path,
        error=error,
    )
    response.set_cookie(
        PRE_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/",
        max_age=3600,
    )
    return response
