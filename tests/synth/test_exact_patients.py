"""`--patients N` gives exactly N patient rows (first registrations plus cross-border copies)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccdp.synth import generate
from ccdp.synth.population import largest_remainder

DEFAULT = "FR,DE,IT,PL,BR,KE"


def patient_rows(out: Path) -> int:
    return sum(len(pd.read_csv(f, dtype=str)) for f in out.glob("*/patient.csv"))


@pytest.mark.parametrize(("countries", "n"), [(DEFAULT, 3000), (DEFAULT, 1001), ("FR,KE", 7)])
def test_patients_n_gives_exactly_n_patient_rows(tmp_path: Path, countries: str, n: int) -> None:
    out = tmp_path / "out"
    generate(out, countries=countries, patients=n, seed=11)
    assert patient_rows(out) == n
    truth = json.loads((out / "truth.json").read_text())
    assert sum(c["patients"] for c in truth["countries"].values()) == n
    for code, c in truth["countries"].items():  # truth counts what each country's file holds
        assert len(pd.read_csv(out / code / "patient.csv", dtype=str)) == c["patients"]


def test_the_cli_says_exactly_n(tmp_path: Path, ccdp) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cli"
    ccdp("synth", out, "--patients", "3001", "--seed", "2")
    assert patient_rows(out) == 3001


def test_largest_remainder_adds_up_and_follows_the_weights() -> None:
    split = largest_remainder(10, np.array([1.0, 1.0, 1.0]))
    assert split.sum() == 10 and sorted(split.tolist()) == [3, 3, 4]
    assert largest_remainder(7, [0.5, 0.25, 0.25]).tolist() == [3, 2, 2]
    assert largest_remainder(0, [1.0]).tolist() == [0]
