"""The attack the hardening must defeat: pattern mining and frequency alignment of name bigrams
with the public name lists the synthetic registries were drawn from (the strongest plausible
list: the attacker knows the population's true name frequencies)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ccdp.linkage import CHILD_SCHEMA, FieldSpec, LinkageSchema, encode
from ccdp.linkage.attack import NameField, bit_groups, frequency_attack
from ccdp.linkage.normalise import names
from ccdp.synth.identifiers import name_lists

SECRET = b"custodians-shared-secret-0001"
K = 10


def _public(locale: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    lists = name_lists(locale)
    vals, weights = [], []
    for sex in ("male", "female"):
        n, cdf = lists[f"{kind}_{sex}"]
        vals.append(n)
        weights.append(np.diff(cdf, prepend=0.0))
    s = pd.DataFrame({"n": names(pd.Series(np.concatenate(vals))), "w": np.concatenate(weights)})
    w = s.groupby("n")["w"].sum()
    return w.index.to_numpy(dtype=object), w.to_numpy()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from ccdp.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, countries="FR", patients=10000, seed=12, with_identifiers=True)
    return pd.read_csv(out / "FR" / "identifiers.csv", dtype=str, keep_default_na=False)


def _attack(registry: pd.DataFrame, salt: str | None, hardening: str = "none"):
    schema = LinkageSchema(
        fields=(FieldSpec("given_name", "name", K), FieldSpec("family_name", "name", K)),
        salt_column=salt,
        hardening=hardening,  # type: ignore[arg-type]
    )
    fields = [
        NameField(names(registry["given_name"]), *_public("fr_FR", "given")),
        NameField(names(registry["family_name"]), *_public("fr_FR", "family")),
    ]
    return frequency_attack(encode(registry, SECRET, schema), fields, K)


def test_the_attack_reidentifies_names_from_unhardened_encodings(registry: pd.DataFrame):
    results = _attack(registry, salt=None)
    correct = sum(r.correct for r in results)
    baseline = 0.0
    for field, kind in (("given_name", "given"), ("family_name", "family")):
        public, weights = _public("fr_FR", kind)
        baseline += np.mean(names(registry[field]) == public[np.argmax(weights)])
    for r in results:
        print(f"unhardened: re-identification {r.recall:.4f}, F {r.f_measure:.4f}")
    assert results[0].groups_found >= 30
    # far more names recovered than by guessing the commonest given and family name for everyone
    assert correct > 0.05 * len(registry)
    assert correct > 3 * baseline * len(registry)
    assert max(r.f_measure for r in results) > 0.04


def test_salting_with_the_birth_year_leaves_the_attack_nothing(registry: pd.DataFrame):
    for result in _attack(registry, salt="birth_date"):
        print(f"salted: re-identification {result.recall:.4f}, F {result.f_measure:.4f}")
        assert result.correct <= 0.001 * result.records
        assert result.f_measure < 0.005


def test_the_partnership_schema_offers_no_bigram_group_to_mine(registry: pd.DataFrame):
    """CHILD_SCHEMA as deployed (salted, with dates and sex): no group of positions co-occurs
    like one name bigram; the only groups the miner finds, if any, are unsalted-like tokens of
    the date and sex, which identify no one."""
    enc = encode(registry, SECRET, CHILD_SCHEMA)
    unsalted = encode(registry, SECRET, dataclasses.replace(CHILD_SCHEMA, salt_column=None))
    assert len(bit_groups(unsalted, K)) > 2 * len(bit_groups(enc, K))


@pytest.mark.parametrize("salt", [None, "birth_date"])
def test_each_name_segment_attacked_alone(registry: pd.DataFrame, salt: str | None):
    """The segmented schema puts each name in its own segment, which an attacker can cut out and
    attack alone with that field's bits per bigram. Unsalted, the given-name segment gives names
    away; salted with the birth year (as deployed) neither segment gives any."""
    schema = dataclasses.replace(CHILD_SCHEMA, salt_column=salt)
    enc = encode(registry, SECRET, schema)
    got = {}
    for k, (seg, spec) in enumerate(zip(CHILD_SCHEMA.segments[:2], CHILD_SCHEMA.fields[:2],
                                        strict=True)):  # fmt: skip
        field = NameField(names(registry[spec.column]), *_public("fr_FR", seg.name))
        got[seg.name] = frequency_attack(enc.segment(k), [field], spec.bits_per_token)[0]
        print(
            f"{salt or 'unsalted'} {seg.name}: re-identification {got[seg.name].recall:.4f}, "
            f"F {got[seg.name].f_measure:.4f}, groups {got[seg.name].groups_found}"
        )
    if salt is None:
        assert max(r.correct for r in got.values()) > 0.008 * len(registry)
    else:
        assert all(r.correct <= 0.001 * r.records and r.f_measure < 0.005 for r in got.values())
