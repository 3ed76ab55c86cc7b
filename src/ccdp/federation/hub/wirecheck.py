"""The one gate every request body passes before any route sees it: size, then JSON form.

JSON allows what the hub cannot hold: lone surrogates (`"\\ud800"`, not encodable as UTF-8, so
neither stored nor logged), NaN and Infinity (Python's extension) and numbers such as 1e400 that
parse to infinity, integers beyond 64 bits (no database column holds them) and nesting deep
enough to exhaust the parser's stack. Each used to reach a route and end as a 500. `BodyGate`
(ASGI middleware) reads a body at most to its limit (413 before parsing, whether the length is
declared or the body streams in chunks), checks it here (400 for text that is not JSON, 422 with
the JSON path of a value it cannot hold) and hands the same bytes on to the route.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MiB = 1024 * 1024
MAX_DEPTH = 64  # far deeper than any message of the protocol; the parser's stack is not at risk
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what a database integer column holds
FINITE = "numbers must be finite (no NaN or infinity)"
_SURROGATE = re.compile("[\ud800-\udfff]")
# A document the hub cannot hold has, in its text, the escape of a surrogate (in a string: UTF-8
# text holds none unescaped), or, outside its strings, a NaN or (-)Infinity constant, a run of 19
# digits (an integer past 64 bits, a float past 1e308 without an exponent) or an exponent of
# three digits (1e400), or containers nested deeper than MAX_DEPTH. A valid JSON text with none
# of these is one the full check would keep, so plain C parsing is enough (`parse`).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAYBE_BAD = re.compile(r"NaN|Infinity|\d{19}|[eE]\+?\d{3}")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class WireError(ValueError):
    """A body the hub refuses before parsing it into a model: status, one-line why, and where."""

    def __init__(self, status: int, msg: str, loc: list[str | int] | None = None) -> None:
        super().__init__(msg)
        self.status, self.msg, self.loc = status, msg, loc or ["body"]

    def body(self) -> dict[str, Any]:
        """The error body every refusal of the hub has: a summary line and the errors."""
        where = ".".join(str(p) for p in self.loc)
        return {"detail": f"{where}: {self.msg}", "errors": [{"loc": self.loc, "msg": self.msg}]}


@dataclass(frozen=True)
class _Bad:
    """Stands in, during parsing, for a value the hub cannot hold; the walk reports its path."""

    why: str


def _float(text: str) -> Any:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Bad(f"{FINITE}; {text[:40]} overflows to infinity")
    return value


def _int(text: str) -> Any:
    if len(text) > 20:  # more digits than any 64-bit integer; never convert a huge one
        return _Bad(f"integer of {len(text)} digits is out of range (64-bit integers only)")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        return _Bad("integer is out of range (64-bit integers only)")
    return value


def _constant(text: str) -> Any:
    return _Bad(f"{FINITE}; got {text}")


def parse(raw: bytes) -> Any:
    """The JSON document in `raw`, or WireError saying what is wrong and where. A text that
    cannot hold what the hub refuses (`_MAYBE_BAD`, above) is parsed by json alone, in C: the
    full check calls Python for every number and builds the path of every value, 1.3-1.4x the
    time on a small answer, 2.1x on a Kaplan-Meier table (benchmarks/bench_wirecheck.py)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(400, f"the body is not UTF-8 text (byte {exc.start})") from None
    if _SURROGATE_ESCAPE.search(text) is None:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            pass  # the full parse says why, as it always did
        else:
            outside = _STRING.sub('""', text)  # valid JSON: its strings are found exactly
            if _MAYBE_BAD.search(outside) is None and _depth(outside) <= MAX_DEPTH:
                return doc
    return _parse_checked(text)


def _depth(outside: str) -> int:
    """How deep the containers nest, in a valid JSON text with its strings emptied."""
    if outside.count("[") + outside.count("{") <= MAX_DEPTH:
        return 0  # so few brackets cannot nest too deep: no need to count
    brackets = _NOT_BRACKET.sub("", outside)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _parse_checked(text: str) -> Any:
    """`parse` value by value: every number and string judged, the path of a refused one named."""
    try:
        doc = json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        msg = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise WireError(400, msg) from None
    except RecursionError:
        raise WireError(422, f"JSON nested more than {MAX_DEPTH} levels deep") from None
    check(doc)
    return doc


def check(doc: Any) -> None:
    """Raise WireError (422) at the first value the hub cannot hold, naming its JSON path."""
    stack: list[tuple[Any, list[str | int]]] = [(doc, ["body"])]
    while stack:
        value, loc = stack.pop()
        if len(loc) > MAX_DEPTH + 1:
            raise WireError(422, f"JSON nested more than {MAX_DEPTH} levels deep", loc[:8])
        if isinstance(value, _Bad):
            raise WireError(422, value.why, loc)
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise WireError(422, "text holds a lone surrogate (\\ud800-\\udfff)", loc)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise WireError(422, "a key holds a lone surrogate (\\ud800-\\udfff)", loc)
                stack.append((item, [*loc, key if len(key) <= 64 else key[:64] + "…"]))
        elif isinstance(value, list):
            stack.extend((item, [*loc, i]) for i, item in enumerate(value))


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _is_form(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


class BodyGate:
    """ASGI middleware: every HTTP request body limited (`limit_for(path)` bytes) and checked.
    The API takes JSON only; the dashboard's pages (outside `/api/`) also take HTML forms.

    The body is read here, chunk by chunk, and refused (413, naming the limit) as soon as its
    declared length or the bytes received pass the limit; a body that is kept is checked as JSON
    and replayed unchanged to the app, which parses it again (the check is the cheaper part)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except WireError as exc:
            await _refuse(send, exc)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: a disconnect, when it comes

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limit_for(scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise WireError(400, f"Content-Length {declared[:20]!r} is not a number")
            if int(declared) > limit:
                raise WireError(413, _too_big(limit, f"declares {int(declared)} bytes"))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise WireError(413, _too_big(limit, "passed the limit while streaming"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            kind = headers.get("content-type", "application/json")
            if _is_form(kind) and not scope["path"].startswith("/api/"):
                return body  # the dashboard's forms (parsed and checked by its pages)
            if not _is_json(kind):
                kind = headers.get("content-type", "")[:60]
                raise WireError(415, f"request bodies are JSON (application/json), not {kind}")
            parse(body)
        return body


def _too_big(limit: int, what: str) -> str:
    size = f"{limit} bytes" + (f" ({limit / MiB:g} MiB)" if limit >= MiB // 16 else "")
    return f"request body too large: it {what}; the limit for this route is {size}"


async def _refuse(send: Send, exc: WireError) -> None:
    payload = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    if exc.status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
