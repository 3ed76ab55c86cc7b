"""Encodings: deterministic per secret, unrelated across secrets and fields, bits as specified."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccdp.linkage import CHILD_SCHEMA, FieldSpec, LinkageError, LinkageSchema, encode
from ccdp.linkage.encode import _bigrams, field_key, tokens
from ccdp.linkage.match import dice

SECRET = b"custodians-shared-secret-0001"


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    given = ["Anna", "Jan", "Zofia", "Müller", "Amani", "Wanjiru", "Luca", "Giulia", "João"]
    family = ["Nowak", "Kowalski", "Rossi", "Schmidt", "Kamau", "Silva", "Martin", "Wójcik"]
    return pd.DataFrame(
        {
            "given_name": rng.choice(given, n),
            "family_name": rng.choice(family, n),
            "birth_date": [
                f"{2000 + rng.integers(0, 15)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
                for _ in range(n)
            ],
            "sex": rng.choice(["male", "female"], n),
        }
    )


def _same(a, b) -> np.ndarray:
    idx = np.arange(len(a))
    return dice(a, idx, b, idx)


def test_same_secret_same_encodings_and_popcounts_count_the_bits():
    f = _frame()
    a, b = encode(f, SECRET), encode(f, SECRET)
    assert np.array_equal(a.packed, b.packed)
    assert a.packed.shape == (len(f), CHILD_SCHEMA.bits // 8)
    assert np.array_equal(a.popcount, np.unpackbits(a.packed, axis=1).sum(axis=1))


def test_another_secret_gives_unrelated_encodings():
    f = _frame()
    a, b = encode(f, SECRET), encode(f, SECRET[::-1])
    same_record = _same(a, b)
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, len(f), 2000), rng.integers(0, len(f), 2000)
    unrelated = dice(a, i, a, j)[i != j]
    # a record under two secrets is no closer than two different records under one
    assert same_record.mean() < np.median(unrelated) + 0.05
    assert same_record.max() < 0.6


def test_field_keys_are_independent():
    """The same value in two different fields sets unrelated bits (its own key per field)."""
    one = LinkageSchema(fields=(FieldSpec("a", "name", 20),), salt_column=None)
    two = LinkageSchema(fields=(FieldSpec("b", "name", 20),), salt_column=None)
    f = pd.DataFrame({"a": ["Kowalski", "Wanjiru"], "b": ["Kowalski", "Wanjiru"]})
    assert _same(encode(f, SECRET, one), encode(f, SECRET, two)).max() < 0.3
    keys = {field_key(SECRET, CHILD_SCHEMA, s.key_label) for s in CHILD_SCHEMA.fields}
    assert len(keys) == len(CHILD_SCHEMA.fields)


def test_a_key_group_makes_swapped_fields_agree():
    spec = LinkageSchema(
        fields=(
            FieldSpec("g", "name", 20, key_group="n"),
            FieldSpec("f", "name", 20, key_group="n"),
        ),
        salt_column=None,
    )
    a = pd.DataFrame({"g": ["Amani"], "f": ["Kamau"]})
    b = pd.DataFrame({"g": ["Kamau"], "f": ["Amani"]})
    assert _same(encode(a, SECRET, spec), encode(b, SECRET, spec))[0] == 1.0


def test_bits_are_the_hmac_double_hashing_of_each_token():
    """An independent re-computation of one record's bits from the definition."""
    spec = LinkageSchema(fields=(FieldSpec("g", "name", 7),), salt_column=None)
    enc = encode(pd.DataFrame({"g": ["Zofia"]}), SECRET, spec)
    key = field_key(SECRET, spec, "field:g:name")
    expected = set()
    for t in ["_z", "zo", "of", "fi", "ia", "a_"]:
        d = hmac.new(key, t.encode(), hashlib.sha256).digest()
        h1, h2 = int.from_bytes(d[:8], "little"), int.from_bytes(d[8:16], "little") | 1
        expected |= {(h1 + i * h2) % 2**64 % 1024 for i in range(7)}
    assert set(np.flatnonzero(np.unpackbits(enc.packed[0]))) == expected


def test_salting_with_the_birth_year_separates_a_name_across_years():
    spec = LinkageSchema(fields=(FieldSpec("given_name", "name", 20),), salt_column="birth_date")
    f = pd.DataFrame({"given_name": ["Zofia"] * 3, "birth_date": ["2008-01-01", "2008-12-31",
                                                                  "2009-01-01"]})  # fmt: skip
    e = encode(f, SECRET, spec)
    assert dice(e, np.array([0]), e, np.array([1]))[0] == 1.0
    assert dice(e, np.array([0]), e, np.array([2]))[0] < 0.3


@pytest.mark.parametrize("hardening", ["balance", "xor"])
def test_hardening_keeps_identical_records_identical(hardening: str):
    spec = dataclasses.replace(CHILD_SCHEMA, hardening=hardening)
    f = _frame(50)
    a, b = encode(f, SECRET, spec), encode(f, SECRET, spec)
    assert a.bits == spec.out_bits and np.array_equal(a.packed, b.packed)
    if hardening == "balance":
        assert (a.popcount == CHILD_SCHEMA.bits).all()


def test_date_tokens_survive_a_day_month_swap():
    assert set(tokens("20080507", "date")) & set(tokens("20080705", "date")) == {"y2008", "p5-7"}


def test_date_views_tell_a_swap_a_day_off_and_another_day_apart():
    """date_pair survives a swap; date_near is shared by two dates one day apart (across a month
    end too) and never by two dates two days apart."""
    assert tokens("20080507", "date_pair") == tokens("20080705", "date_pair")
    assert not set(tokens("20080507", "date_md")) & set(tokens("20080705", "date_md"))
    days = pd.date_range("2008-01-01", "2008-12-31").strftime("%Y%m%d").tolist()
    for a, b, c in zip(days, days[1:], days[2:], strict=False):
        assert set(tokens(a, "date_near")) & set(tokens(b, "date_near")), (a, b)
        assert not set(tokens(a, "date_near")) & set(tokens(c, "date_near")), (a, c)
    assert tokens("20080500", "date_md") == ["m5"] and tokens("20080500", "date_near") == []


def test_the_segment_layout_keeps_each_field_in_its_own_bits():
    """Each field of CHILD_SCHEMA sets bits only inside its segment, and changing one field
    changes no bit of another segment."""
    f = _frame(200)
    enc = encode(f, SECRET)
    dense = np.unpackbits(enc.packed, axis=1).astype(bool)
    spans = {}
    start = 0
    for seg in CHILD_SCHEMA.segments:
        spans[seg.name] = (start, start + seg.bits)
        start += seg.bits
    assert enc.layout is not None and enc.layout.words == tuple(
        (a // 64, b // 64) for a, b in spans.values()
    )
    for column, seg in (("given_name", "given"), ("family_name", "family"), ("sex", "sex")):
        changed = f.assign(**{column: f[column].str[::-1] if column != "sex" else
                              f[column].map({"male": "female", "female": "male"})})  # fmt: skip
        diff = dense ^ np.unpackbits(encode(changed, SECRET).packed, axis=1).astype(bool)
        a, b = spans[seg]
        assert diff[:, a:b].any() and not diff[:, :a].any() and not diff[:, b:].any(), column
        assert dense[:, a:b].any(axis=1).all()  # every record sets bits in each segment
    moved = f.assign(birth_date=f["birth_date"].str[:8] + "28")  # same year: same salt
    diff = dense ^ np.unpackbits(encode(moved, SECRET).packed, axis=1).astype(bool)
    a, b = spans["date"]
    assert diff[:, a:b].any() and not diff[:, :a].any() and not diff[:, b:].any()


def test_a_segmented_schema_is_checked():
    from ccdp.linkage.schema import Segment

    seg = Segment("n", 256, (0.5,), (0.1, 0.8, 0.1))
    with pytest.raises(LinkageError, match="add up to"):
        LinkageSchema(fields=(FieldSpec("g", "name", 5, segment="n"),), bits=512, segments=(seg,))
    with pytest.raises(LinkageError, match="name no segment"):
        LinkageSchema(fields=(FieldSpec("g", "name", 5, segment="x"),), bits=256, segments=(seg,))
    with pytest.raises(LinkageError, match="m needs"):
        Segment("n", 256, (0.5,), (0.5, 0.5))


def test_bad_input_is_refused_with_what_is_wrong():
    with pytest.raises(LinkageError, match="at least 16 bytes"):
        encode(_frame(3), b"short")
    with pytest.raises(LinkageError, match="family_name"):
        encode(_frame(3).drop(columns="family_name"), SECRET)
    with pytest.raises(LinkageError, match="multiple of 128"):
        LinkageSchema(fields=CHILD_SCHEMA.fields, bits=1000)


def test_encoding_is_fast_enough():
    """Floor far below the benchmark's figure so a loaded machine does not fail it."""
    import time

    f = pd.concat([_frame(5000, s) for s in range(4)], ignore_index=True)
    t = time.perf_counter()
    encode(f, SECRET)
    assert len(f) / (time.perf_counter() - t) > 2_000


@given(st.lists(st.text(alphabet="abcżółęéü_ ", max_size=12), min_size=1, max_size=30))
def test_vectorised_bigrams_equal_the_plain_token_list(values: list[str]):
    vocab, lens, flat = _bigrams(np.array(values, dtype=str))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    for k, v in enumerate(values):
        got = [vocab[t] for t in flat[offsets[k] : offsets[k + 1]]]
        assert got == tokens(v, "name")
