"""The dashboard's only way to the hub's data: its public JSON API, called with the person's token.

Pages never reach into the hub's database or service: each one calls `/api/…` routes of the same
app (in-process, over ASGI, no socket), with the signed-in person's bearer token, so every role
check, validation and audit entry is the API's own, and anything a page shows a script can get.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI


class ApiError(Exception):
    """The API refused a page's call: its status and its one-line `detail`."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []


class HubApi:
    """Calls to the hub's API as one person (their token)."""

    def __init__(self, app: FastAPI, token: str | None) -> None:
        self.app = app
        self.token = token

    async def call(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        """One API call; the JSON it returns, or ApiError with the API's own words."""
        if not path.startswith("/api/"):
            raise ValueError(f"the dashboard calls only /api/ routes, not {path}")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hub.internal", headers=headers, timeout=60
        ) as client:
            kept = {k: v for k, v in params.items() if v is not None}
            response = await client.request(method, path, json=json, params=kept)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            detail = str(body.get("detail") or response.reason_phrase)
            raise ApiError(response.status_code, detail, body.get("errors"))
        return response.json() if response.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, **params)

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.call("POST", path, json=json)
