"""The body gate's fast path (wirecheck.parse): a text that cannot hold what the hub refuses is
parsed by json alone; every other text takes the full check. Whatever the path, `parse` must
return the same document, or raise the same refusal (status, message, JSON path), as the full
check (`_parse_checked`) does on its own."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from ccdp.federation.hub import wirecheck
from ccdp.federation.hub.wirecheck import MAX_DEPTH, WireError, parse


def outcome(fn: Any, arg: Any) -> tuple[str, Any]:
    """What `fn(arg)` gives: the document (NaN-free, so == compares), or the refusal."""
    try:
        return "doc", fn(arg)
    except WireError as exc:
        return "refused", (exc.status, exc.msg, exc.loc)


def same_as_full_check(text: str) -> tuple[str, Any]:
    raw = text.encode("utf-8", "surrogatepass")
    got = outcome(parse, raw)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert got[0] == "refused" and got[1][0] == 400
        return got
    assert got == outcome(wirecheck._parse_checked, decoded), text[:200]
    return got


def nested(depth: int, inner: str = "1", opener: str = "[", closer: str = "]") -> str:
    return opener * depth + inner + closer * depth


HOSTILE = [
    '{"a": "\\ud800"}',
    '{"a": "\\uDBFF\\uDC00"}',  # a surrogate pair escaped: one character, kept
    '{"\\udc00": 1}',
    '{"a": "\\\\ud800"}',  # an escaped backslash, then text: no surrogate
    '{"spec": {"timeout": NaN}}',
    '{"spec": {"timeout": -Infinity}}',
    '{"spec": "NaN and Infinity in a string"}',
    "[1e400]",
    "[1E+308]",
    "[1.7976931348623157e308]",
    "[1e-400]",
    "[123456789012345678]",
    "[9223372036854775807]",
    "[9223372036854775808]",
    "[-9223372036854775808]",
    "[-9223372036854775809]",
    "[" + "9" * 400 + ".5]",
    '{"x": "' + "7" * 30 + '"}',
    "[0.12345678901234567890123]",
    "not json",
    "",
    "{",
    '{"a": 1,}',
    '{"a": "unterminated}',
    '"just a string with [[[ and {{{"',
    '{"s": "\\"[[[[\\\\", "n": [1, [2, [3]]]}',
    nested(MAX_DEPTH - 1),
    nested(MAX_DEPTH),
    nested(MAX_DEPTH + 1),
    nested(MAX_DEPTH, "[]"),
    nested(MAX_DEPTH + 1, ""),
    nested(MAX_DEPTH + 2, ""),
    nested(MAX_DEPTH, '{"a": 1}'),
    nested(33, nested(33, "1", '{"k": ', "}"), "[", "]"),
    '["' + "[" * 200 + '"]',
    "[" * 100_000,
    nested(100_000),
    json.dumps({"rows": [[i * 0.5, 100 - i, i % 3] for i in range(500)]}),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_each_hostile_text_gets_what_the_full_check_gives(text: str) -> None:
    same_as_full_check(text)


def test_the_refusals_themselves_are_still_given() -> None:
    """The fast path lets nothing through that the hub cannot hold (spot checks of the above)."""
    assert same_as_full_check('{"a": "\\ud800"}')[0] == "refused"
    assert same_as_full_check("[9223372036854775808]")[0] == "refused"
    assert same_as_full_check("[1e400]")[0] == "refused"
    assert same_as_full_check(nested(MAX_DEPTH + 1))[0] == "refused"
    assert same_as_full_check("[" * 100_000)[1][:2] == (422, "JSON nested more than 64 levels deep")
    assert same_as_full_check(nested(MAX_DEPTH))[0] == "doc"


PIECES = [
    "0", "-1", "1.5", "1e5", "1E-7", "2.5e+12", "9" * 18, "9" * 19, "1" + "0" * 20, "1e308",
    "1e309", "-1e999", "NaN", "Infinity", "-Infinity", "true", "false", "null",
    '"a"', '""', '"\\u00e9"', '"\\ud800"', '"\\udfff"', '"\\uD83D\\uDE00"', '"[{"', '"]}"',
    '"\\""', '"\\\\"', '"e123"', '"NaN"',
]  # fmt: skip


def random_text(rng: random.Random, depth: int = 0) -> str:
    """A JSON-like text: mostly valid, with hostile values and the odd syntax slip."""
    roll = rng.random()
    if depth > 70 or roll < 0.45:
        return rng.choice(PIECES)
    if roll < 0.7:
        items = [random_text(rng, depth + 1) for _ in range(rng.randrange(4))]
        text = "[" + ", ".join(items) + "]"
    else:
        keys = [rng.choice(['"k"', '"\\ud801"', '"a[b"', '"x"']) for _ in range(rng.randrange(3))]
        text = "{" + ", ".join(f"{k}: {random_text(rng, depth + 1)}" for k in keys) + "}"
    if rng.random() < 0.01:
        text = text[: rng.randrange(len(text) + 1)]  # cut short: not JSON
    return text


def deep_random_text(rng: random.Random) -> str:
    """A chain of containers 55-75 deep with random values beside it."""
    depth = rng.randrange(55, 76)
    opens = [rng.choice("[{") for _ in range(depth)]
    text = rng.choice(PIECES)
    for o in reversed(opens):
        text = f"[{text}, {rng.choice(PIECES)}]" if o == "[" else f'{{"k": {text}}}'
    return text


def test_random_texts_get_what_the_full_check_gives() -> None:
    rng = random.Random(20261207)
    kinds = {"doc": 0, "refused": 0}
    for _ in range(3000):
        kinds[same_as_full_check(random_text(rng))[0]] += 1
    for _ in range(400):
        kinds[same_as_full_check(deep_random_text(rng))[0]] += 1
    assert kinds["doc"] > 500 and kinds["refused"] > 500  # both outcomes well exercised


def test_a_node_answer_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A realistic answer (a Kaplan-Meier table of 2,000 rows, a count by group, hashes whose hex
    holds "e" then digits, a reason naming NaN) never reaches the full check: what looks like a
    number or a constant inside a string is not one, and the speed-up cannot quietly go away."""
    table = [[round(i * 0.731, 6), 2000 - i, i % 2, i % 3] for i in range(2000)]
    answer = {
        "task_id": "t-1",
        "node": "DE",
        "status": "answered",
        "summary": {"parts": {"km": {"table": table}, "count": {"ALL": 912, "AML": 133}}},
        "reason": "no NaN or Infinity here, 1e400 and 12345678901234567890 are text",
        "audit_head": {"seq": 41, "hash": "e1234" + "ab" * 29 + "e05"},
    }
    raw = json.dumps(answer).encode()

    def full_check(_text: str) -> Any:
        raise AssertionError("the full check ran")

    monkeypatch.setattr(wirecheck, "_parse_checked", full_check)
    assert parse(raw) == answer
