"""A researcher's client for the hub (used by `ccdp submit`, the demo and notebooks)."""

from __future__ import annotations

import re
import ssl
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx

from ccdp.errors import CcdpError


def tls_verify(cacert: str | Path | None) -> bool | ssl.SSLContext:
    """What httpx needs to trust the hub: the system CAs, or a given CA bundle (self-signed)."""
    return ssl.create_default_context(cafile=str(cacert)) if cacert else True


class HubRequestError(CcdpError):
    """The hub refused a request or could not be reached."""


class StudyFailed(CcdpError):
    """The study ended in failure at the hub (the message says why)."""


class BadStudyId(CcdpError):
    """A study id that cannot be one (empty, or not a single path segment)."""


def check_study_id(study_id: str) -> str:
    """The id as given, or BadStudyId: an empty id (a script whose `ccdp submit` failed) would
    otherwise ask for the list of studies and fail far from the cause."""
    if not study_id.strip():
        raise BadStudyId("the study id is empty: give the id `ccdp submit` printed")
    if not re.fullmatch(r"[A-Za-z0-9._~-]+", study_id):
        raise BadStudyId(f"{study_id!r} is not a study id (letters, digits, '.', '_', '-')")
    return study_id


def wait_for_hub(url: str, timeout: float, verify: bool | ssl.SSLContext = True) -> float:
    """Poll the hub's health route until it answers 200 (a hub just started in the background
    is not listening yet); returns the seconds waited, HubRequestError after `timeout`."""
    start = time.monotonic()
    health = url.rstrip("/") + "/api/health"
    last = "no answer"
    while True:
        try:
            resp = httpx.get(health, timeout=2, verify=verify)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = f"{resp.status_code} from /api/health"
        except httpx.TransportError as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() - start >= timeout:
            raise HubRequestError(f"the hub at {url} did not answer within {timeout:g} s ({last})")
        time.sleep(0.2)


def _iso(value: Any) -> str:
    """A YAML date or datetime as ISO 8601 text, for a JSON body."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class HubClient:
    """Submit studies and wait for their results over the hub's researcher routes."""

    def __init__(self, hub_url: str, token: str, verify: bool | ssl.SSLContext = True) -> None:
        self.url = hub_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=httpx.Timeout(10.0, read=75.0),
        )

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise HubRequestError(f"cannot reach the hub at {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = resp.text
            raise HubRequestError(f"hub refused {method} {path} ({resp.status_code}): {detail}")
        try:
            return resp.json()
        except ValueError as exc:  # e.g. a redirect of a malformed path: no body to read
            raise HubRequestError(
                f"the hub answered {method} {path} with {resp.status_code} and no JSON "
                f"(is {self.url} a ccdp hub?)"
            ) from exc

    def submit(self, spec: dict[str, Any]) -> str:
        return self._call("POST", "/api/studies", json={"spec": spec})["id"]

    def submit_file(self, path: Path) -> str:
        """Validate the spec locally first (errors name the file and key), then submit."""
        import json

        import yaml

        from ccdp.federation.study import load_study

        load_study(path)
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        # YAML reads 2006-01-01 as a date: sent as the ISO text a JSON spec would hold
        return self.submit(json.loads(json.dumps(raw, default=_iso)))

    def studies(self) -> list[dict[str, Any]]:
        """The studies this token may see: id, title, analysis, status."""
        return self._call("GET", "/api/studies")

    def study(self, study_id: str, wait: float = 0) -> dict[str, Any]:
        return self._call("GET", f"/api/studies/{check_study_id(study_id)}", params={"wait": wait})

    def wait(self, study_id: str, max_wait: float = 3600, poll: float = 30) -> dict[str, Any]:
        """Long-poll until the study is done or failed (bounded by `max_wait`)."""
        end = time.monotonic() + max_wait
        while True:
            left = end - time.monotonic()
            study = self.study(study_id, wait=max(0.0, min(poll, left)))
            if study["status"] in ("done", "failed"):
                return study
            if left <= 0:
                raise HubRequestError(f"study {study_id} not finished after {max_wait:g} s")

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/nodes")

    def catalogues(self, node: str | None = None) -> Any:
        """Every node's latest catalogue (or, with `node`, that node's one)."""
        if node is not None:
            return self._call("GET", f"/api/catalogues/{node}")
        return self._call("GET", "/api/catalogues")

    def node_name(self) -> str:
        """The name of the node whose token this client holds (`GET /api/node/me`)."""
        return self._call("GET", "/api/node/me")["name"]

    def publish_catalogue(self, catalogue: dict[str, Any]) -> dict[str, Any]:
        """Publish a node's catalogue (with that node's token): `PUT /api/node/catalogue`."""
        return self._call("PUT", "/api/node/catalogue", json=catalogue)

    # -- trials (docs/randomisation.md) ---------------------------------------------------
    def create_trial(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a trial (admin token)."""
        return self._call("POST", "/api/trials", json={"spec": spec})

    def trial(self, name: str) -> dict[str, Any]:
        """A trial's public description: arms, ratio, strata, method (user or node token)."""
        return self._call("GET", f"/api/trials/{name}")

    def randomise(self, trial: str, patient: str, strata: dict[str, str]) -> dict[str, Any]:
        """Randomise a node's patient (node token): pseudonym and strata only."""
        body = {"patient": patient, "strata": strata}
        return self._call("POST", f"/api/node/trials/{trial}/randomise", json=body)

    def trial_allocations(self, trial: str) -> dict[str, Any]:
        """The allocation list, counts and seed (a statistician of the trial)."""
        return self._call("GET", f"/api/trials/{trial}/allocations")

    # -- referrals (docs/referrals.md) ----------------------------------------------------
    def refer(self, node_ref: str, summary: dict[str, Any], question: str) -> dict[str, Any]:
        """Post a released case summary to the expert board (node token)."""
        body = {"node_ref": node_ref, "summary": summary, "question": question}
        return self._call("POST", "/api/node/referrals", json=body)

    def node_referrals(self) -> list[dict[str, Any]]:
        """This node's referrals: state and recommendation (node token)."""
        return self._call("GET", "/api/node/referrals")

    def referrals(self) -> list[dict[str, Any]]:
        """Referrals to the board, one line each (expert token)."""
        return self._call("GET", "/api/referrals")

    def referral(self, ref: str) -> dict[str, Any]:
        """One referral in full with the board's comments (expert token)."""
        return self._call("GET", f"/api/referrals/{ref}")

    def comment_referral(self, ref: str, text: str) -> dict[str, Any]:
        return self._call("POST", f"/api/referrals/{ref}/comments", json={"text": text})

    def recommend(self, ref: str, recommendation: dict[str, Any]) -> dict[str, Any]:
        """Record the board's recommendation (expert token)."""
        body = {"recommendation": recommendation}
        return self._call("POST", f"/api/referrals/{ref}/recommendation", json=body)

    def close(self) -> None:
        self._http.close()


def study_result(result_json: dict[str, Any]):
    """Rebuild the analyses stage's StudyResult from its JSON form (for printing and plots)."""
    from pydantic import ValidationError

    from ccdp.analyses import registry
    from ccdp.federation.study import NodeStatus, StudyResult

    result = None
    raw = result_json.get("result")
    if raw is not None:
        try:
            result = registry.get(result_json["analysis"]).result_model.model_validate(raw)
        except ValidationError:
            result = None
    return StudyResult(
        study_id=result_json.get("study_id", ""),
        title=result_json.get("title", ""),
        analysis=result_json["analysis"],
        nodes={n: NodeStatus(**s) for n, s in result_json["nodes"].items()},
        result=result,
        rounds=result_json.get("rounds", 0),
        dedup=(result_json.get("dedup") or {}).get("on"),
    )
