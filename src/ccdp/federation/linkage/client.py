"""The node's HTTP client of the linkage service (httpx): four calls, each refusal raised with
the service's one-line reason."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from ccdp.errors import CcdpError


class LinkageRequestError(CcdpError):
    """The linkage service refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LinkageClient:
    """A node (or admin) talking to one linkage service with its bearer token."""

    def __init__(
        self, base_url: str, token: str, verify: bool | ssl.SSLContext = True, timeout: float = 60
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LinkageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise LinkageRequestError(f"linkage service {self.base_url}: {exc}") from None
        if r.status_code >= 400:
            try:
                detail = str(r.json().get("detail", r.text))
            except ValueError:
                detail = r.text[:300]
            raise LinkageRequestError(
                f"linkage service refused {method} {path} ({r.status_code}): {detail}",
                r.status_code,
            )
        out: dict[str, Any] = r.json()
        return out

    def create_run(
        self, run_id: str, nodes: list[str], threshold: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"run_id": run_id, "nodes": nodes}
        if threshold is not None:
            body["threshold"] = threshold
        return self._call("POST", "/api/admin/runs", json=body)

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/admin/runs/{run_id}/cancel")

    def status(self, run_id: str, wait: float = 0) -> dict[str, Any]:
        timeout = httpx.Timeout(wait + 30)
        return self._call("GET", f"/api/node/runs/{run_id}", params={"wait": wait}, timeout=timeout)

    def upload(self, run_id: str, body: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
        """The encodings, stored at once (the service links in the background); a large
        registry's upload is a large body, hence its own timeout."""
        url = f"/api/node/runs/{run_id}/clks"
        return self._call("POST", url, json=body, timeout=httpx.Timeout(timeout))

    def groups(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/node/runs/{run_id}/groups")

    def years(self, run_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", f"/api/node/runs/{run_id}/years", json={"records": records})

    def confirm(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/node/runs/{run_id}/confirm")
