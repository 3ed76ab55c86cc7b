"""Fellegi-Sunter weights on segmented encodings: EM recovers a constructed mixture, and children
who share names and birth year but not the day are told apart where one Dice cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ccdp.linkage import CHILD_SCHEMA, CHILD_THRESHOLD, encode, link
from ccdp.linkage.evaluate import linked_pairs, precision_recall
from ccdp.linkage.schema import FieldSpec, LinkageSchema
from ccdp.linkage.weights import fit, pattern_table

SECRET = b"custodians-shared-secret-0001"


def test_em_recovers_the_share_of_matches_and_their_probability():
    """Counts made exactly from a known mixture (two independent segments of three levels, the
    last one "missing"): EM with the true m finds the prior, u and each pattern's probability
    (to within what the 20 pseudo-pairs of the u prior move among 100,500 pairs)."""
    levels = [3, 3]
    m = ((0.04, 0.95, 0.01), (0.1, 0.89, 0.01))
    u = (np.array([0.9, 0.09, 0.01]), np.array([0.7, 0.29, 0.01]))
    matches, others = 500.0, 100_000.0
    table = pattern_table(levels)
    m_pat = np.array(m[0])[table[:, 0]] * np.array(m[1])[table[:, 1]]
    u_pat = u[0][table[:, 0]] * u[1][table[:, 1]]
    counts = matches * m_pat + others * u_pat
    model = fit(counts, levels, m, ("a", "b"))
    assert abs(model.prior / (matches / (matches + others)) - 1) < 0.01
    assert np.allclose(model.u, u_pat, rtol=0.01)
    expected = matches * m_pat / (matches * m_pat + others * u_pat)
    assert np.allclose(model.probability, expected, atol=0.005)
    # agreeing on both segments weighs more than on either alone, disagreeing on both least
    w = model.weights.reshape(3, 3)
    assert w[1, 1] > max(w[0, 1], w[1, 0]) > min(w[0, 1], w[1, 0]) > w[0, 0]


def _children(rng: np.random.Generator, n: int, given: list[str], family: list[str]) -> dict:
    days = rng.integers(0, 366, n)
    return {
        "given_name": rng.choice(given, n),
        "family_name": rng.choice(family, n),
        "birth_date": (np.datetime64("2008-01-01") + days).astype(str),
        "sex": rng.choice(["male", "female"], n),
    }


def test_children_sharing_names_and_year_are_told_apart_by_the_date():
    """The scale problem in miniature: few names, one birth year, so many children of the two
    registries share given and family name and differ only in day and month. The copies of 150
    children carry a dropped letter in the family name. Segment weights link the copies and
    hardly anyone else; one Dice over one filter (the previous schema) links many namesakes."""
    rng = np.random.default_rng(4)
    letters = list("abcdefghijklmnoprstuvwz")
    given = ["".join(rng.choice(letters, 6)) for _ in range(30)]
    family = ["".join(rng.choice(letters, 7)) for _ in range(30)]
    a = pd.DataFrame(_children(rng, 1500, given, family))
    b = pd.DataFrame(_children(rng, 1500, given, family))
    copies = rng.choice(1500, 150, replace=False)
    b.iloc[:150] = a.iloc[copies].to_numpy()
    b.loc[:149, "family_name"] = (
        b.loc[:149, "family_name"].str[:3] + b.loc[:149, "family_name"].str[4:]
    )
    ids = {"A": [f"a{i}" for i in range(1500)], "B": [f"b{i}" for i in range(1500)]}
    truth = {frozenset((f"a{c}", f"b{k}")) for k, c in enumerate(copies)}
    truth |= {
        frozenset((f"a{i}", f"b{k}"))
        for k in range(150, 1500)
        for i in np.flatnonzero((a == b.iloc[k]).all(axis=1))  # same child by
    }  # chance: identical identifiers

    def quality(schema: LinkageSchema, threshold: float) -> tuple[float, float]:
        encs = {"A": encode(a, SECRET, schema), "B": encode(b, SECRET, schema)}
        found = linked_pairs(link(encs, threshold, rng=np.random.default_rng(0)), ids)
        return precision_recall(found, truth)

    flat = LinkageSchema(fields=(FieldSpec("given_name", "name", 10),
                                 FieldSpec("family_name", "name", 20),
                                 FieldSpec("birth_date", "date", 20),
                                 FieldSpec("sex", "sex", 20)))  # fmt: skip
    p_flat, _ = quality(flat, 0.85)
    p, r = quality(CHILD_SCHEMA, CHILD_THRESHOLD)
    assert p >= 0.97 and r >= 0.95, (p, r)
    assert p_flat < 0.8, p_flat
