"""What every dashboard page shares: templates, the signed-in person, CSRF, and the API's errors.

A page handler takes `Signed` (the person, or a redirect to the sign-in page), calls the API
through `api(request, who)`, and returns `render(...)`. Forms are POSTs that carry the session's
CSRF token (`{{ csrf_field() }}` in a template) and are checked by `checked_form`. An ApiError a
handler does not catch becomes a page saying what the API said, with the API's status; a 401
ends the session (the token was revoked) and sends the person back to sign in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from ccdp import __version__
from ccdp.web.hubapi import ApiError, HubApi
from ccdp.web.sessions import COOKIE, Session, Sessions

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# (path, label, roles that see it): what each role's navigation offers
NAV: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/network", "Network", ("researcher", "board", "admin", "statistician", "expert")),
    ("/resources", "Resources", ("researcher", "board", "admin", "statistician", "expert")),
    ("/feasibility", "Feasibility", ("researcher", "admin")),
    ("/studies", "Studies", ("researcher", "admin")),
    ("/governance", "Governance", ("researcher", "board", "admin", "statistician", "expert")),
    ("/referrals", "Referrals", ("expert",)),
)


class SignInNeeded(Exception):
    """No live session: the person is sent to sign in, then back to `next`."""

    def __init__(self, next_path: str = "/network") -> None:
        self.next_path = next_path


class Forbidden(Exception):
    """The session's role may not use this page (or the form failed its CSRF check)."""


def sessions(request: Request) -> Sessions:
    return request.app.state.sessions


def current(request: Request) -> Session | None:
    return sessions(request).get(request.cookies.get(COOKIE))


def signed_in(request: Request) -> Session:
    who = current(request)
    if who is None:
        raise SignInNeeded(safe_next(request.url.path))
    return who


Signed = Annotated[Session, Depends(signed_in)]


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this hub only (no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/network"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/network"
    return parts.path or "/network"


def allowed(who: Session, path: str) -> bool:
    return any(p == path and who.role in roles for p, _, roles in NAV)


def need_page(who: Session, path: str) -> None:
    if not allowed(who, path):
        raise Forbidden(f"the {who.role} role has no {path} page")


def api(request: Request, who: Session | None) -> HubApi:
    return HubApi(request.app, who.token if who else None)


async def checked_form(request: Request, who: Session | None) -> dict[str, str]:
    """The POSTed form's fields, after its CSRF token and origin are checked."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = urlsplit(origin).netloc
        if host != request.headers.get("host"):
            raise Forbidden("this form was sent from another site")
    form = await request.form()
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    if who is not None and not who.csrf_ok(fields.get("csrf")):
        raise Forbidden("the form's security token is missing or stale: reload the page")
    return fields


async def checked_multi(request: Request, who: Session) -> dict[str, list[str]]:
    """Like `checked_form`, keeping every value of a repeated field (checkbox groups)."""
    await checked_form(request, who)
    form = await request.form()
    out: dict[str, list[str]] = {}
    for k, v in form.multi_items():
        if isinstance(v, str) and k != "csrf":
            out.setdefault(k, []).append(v)
    return out


def since(iso: str | None) -> str:
    """'3 min ago' for a hub timestamp; 'never' for none."""
    if not iso:
        return "never"
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    secs = (datetime.now(UTC) - at).total_seconds()
    if secs < 90:
        return f"{max(0, int(secs))} s ago"
    if secs < 5400:
        return f"{secs / 60:.0f} min ago"
    if secs < 2 * 86400:
        return f"{secs / 3600:.0f} h ago"
    return at.date().isoformat()


def count_text(cell: dict[str, Any] | None) -> str:
    """A released count as text; a suppressed one as the dashboard always shows it."""
    if not cell:
        return "–"
    if cell.get("suppressed"):
        return "suppressed"
    value = cell.get("count")
    return "–" if value is None else f"{value:,}"


def render(
    request: Request,
    name: str,
    who: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page from `templates/name` with what the layout needs (who, navigation, CSRF)."""
    nav = [(p, label) for p, label, roles in NAV if who is not None and who.role in roles]
    csrf = who.csrf if who else str(context.get("signin_csrf", ""))

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="csrf" value="{}">').format(csrf)

    return templates.TemplateResponse(
        request,
        name,
        {
            "who": who,
            "nav": nav,
            "here": request.url.path,
            "csrf": csrf,
            "csrf_field": csrf_field,
            "version": __version__,
            "since": since,
            "count_text": count_text,
            **context,
        },
        status_code=status_code,
    )


def sign_in_redirect(next_path: str) -> RedirectResponse:
    target = "/" if next_path == "/network" else f"/?next={quote(next_path)}"
    return RedirectResponse(target, status_code=303)


def error_page(request: Request, who: Session | None, status: int, detail: str) -> Response:
    return render(request, "error.html", who, status_code=status, status=status, detail=detail)


def api_error_page(request: Request, who: Session | None, exc: ApiError) -> Response:
    """What the API refused, said on a page (401: the session is over)."""
    if exc.status == 401:
        sessions(request).close(request.cookies.get(COOKIE))
        response = sign_in_redirect(safe_next(request.url.path))
        response.delete_cookie(COOKIE, path="/")
        return response
    return error_page(request, who, exc.status, exc.detail)
