"""The Resources page (being built: see issue 12)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ccdp.web.pages import Signed, need_page, render

router = APIRouter()


@router.get("/resources", response_class=HTMLResponse)
async def resources_page(request: Request, who: Signed) -> HTMLResponse:
    need_page(who, "/resources")
    return render(request, "placeholder.html", who, title="Resources")
