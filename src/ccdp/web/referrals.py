"""The Referrals page (members of the expert board, role `expert`): the cases nodes referred,
one case in full with the board's discussion, a comment box and the structured recommendation
(docs/referrals.md).

Everything goes through the hub's API with the member's token (`/api/referrals…`), so the
API's role check and audit decide: a page read is a `referral-read` in the hub's log.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ccdp.web.hubapi import ApiError
from ccdp.web.pages import Signed, api, checked_form, checked_multi, need_page, render
from ccdp.wire.case_summary import board_options

router = APIRouter()
PATH = "/referrals"
STATE_TAGS = {"open": "warn", "recommended": "good"}


def _path(ref: str) -> str:
    return f"{PATH}/{quote(ref, safe='')}"


@router.get(PATH, response_class=HTMLResponse)
async def referrals_page(request: Request, who: Signed) -> HTMLResponse:
    need_page(who, PATH)
    rows = await api(request, who).get("/api/referrals")
    open_first = sorted(rows, key=lambda r: (r["state"] != "open", r["received_at"]))
    return render(request, "referrals.html", who, rows=open_first, tags=STATE_TAGS)


async def _case_page(
    request: Request, who: Signed, ref: str, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    case = await api(request, who).get(f"/api/referrals/{quote(ref, safe='')}")
    return render(
        request,
        "referral.html",
        who,
        status_code=status_code,
        case=case,
        s=case["summary"],
        options=board_options(),
        tags=STATE_TAGS,
        **extra,
    )


@router.get(PATH + "/{ref}", response_class=HTMLResponse)
async def referral_page(request: Request, who: Signed, ref: str) -> HTMLResponse:
    need_page(who, PATH)
    return await _case_page(request, who, ref)


@router.post(PATH + "/{ref}/comments", response_model=None)
async def add_comment(request: Request, who: Signed, ref: str) -> Response:
    need_page(who, PATH)
    form = await checked_form(request, who)
    text = (form.get("text") or "").strip()
    if not text:
        return await _case_page(request, who, ref, 422, comment_error="Write the comment first.")
    try:
        await api(request, who).post(
            f"/api/referrals/{quote(ref, safe='')}/comments", json={"text": text}
        )
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        return await _case_page(request, who, ref, 422, comment_error=exc.detail)
    return RedirectResponse(_path(ref) + "#comments", status_code=303)


@router.post(PATH + "/{ref}/recommendation", response_model=None)
async def recommend(request: Request, who: Signed, ref: str) -> Response:
    """The board's recommendation from the form: ticked options, trial, text."""
    need_page(who, PATH)
    form = await checked_multi(request, who)
    body = {
        "options": form.get("options", []),
        "trial": (form.get("trial", [""])[0] or "").strip() or None,
        "text": (form.get("text", [""])[0] or "").strip(),
    }
    error = None
    if not body["options"]:
        error = "Tick at least one option."
    else:
        try:
            await api(request, who).post(
                f"/api/referrals/{quote(ref, safe='')}/recommendation",
                json={"recommendation": body},
            )
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            error = f"The hub did not record it: {exc.detail}"
    if error:
        return await _case_page(request, who, ref, 422, rec_error=error, rec_form=body)
    return RedirectResponse(_path(ref) + "#recommendation", status_code=303)
