"""`ccdp classify` as a user runs it: one tumour, a whole file, awkward encodings, bad files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ccdp.terminology.classify_file import ClassifyInputError, classify_csv
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "tumours.csv"


def test_classify_one_tumour_prints_the_classification(ccdp):
    proc = ccdp("classify", "--morphology", "9836", "--topography", "C42.1", "--behaviour", "3")
    out = proc.stdout
    assert "Ia" in out and "001" in out and "011" in out and "Precursor cell leukemias" in out


def test_classify_one_tumour_other_edition(ccdp):
    proc = ccdp("classify", "-m", "9811", "-t", "C80.9", "-b", "3", "--edition", "who2008")
    assert "IIb" in proc.stdout and "Precursor cell lymphomas" in proc.stdout


def test_classify_one_bad_tumour_is_one_red_line_and_exit_2(ccdp):
    proc = ccdp("classify", "-m", "9836", "-t", "C4", "-b", "7", check=False)
    assert proc.returncode == 2
    assert "topography 'C4': not ICD-O-3 (expected Cnn.n" in proc.stderr
    assert "behaviour 7: not in 0,1,2,3,6,9" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_classify_example_file_keeps_columns_and_adds_iccc(ccdp, tmp_path):
    out = tmp_path / "new" / "dir" / "tumours-iccc.csv"
    ccdp("classify", "--input", str(EXAMPLE), "--output", str(out))
    source = pd.read_csv(EXAMPLE, dtype=str, keep_default_na=False)
    result = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(result.columns) == [
        *source.columns,
        "iccc_group",
        "iccc_subgroup",
        "iccc_extended",
        "iccc_recode",
        "iccc_label",
        "error",
    ]
    pd.testing.assert_frame_equal(result[source.columns], source)
    by_id = result.set_index("tumour_id")
    assert by_id.loc["T0001", "iccc_recode"] == "011"
    assert by_id.loc["T0020", "iccc_subgroup"] == "V"
    assert by_id.loc["T0034", "iccc_recode"] == "999"  # in situ breast: not in ICCC
    assert by_id.loc["T0035", "error"].startswith("topography 'C4'")
    assert by_id.loc["T0036", "error"] == "behaviour 7: not in 0,1,2,3,6,9"
    assert "not an ICD-O-3 morphology code" in by_id.loc["T0037", "error"]
    assert "morphology: missing (required)" in by_id.loc["T0038", "error"]
    assert (result["error"] == "").sum() == len(result) - 4


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "registre": ["Hôpital Necker", "Clinique Sainte-Élisabeth", "Hôpital Necker"],
            "morphology": ["9836", "9510", "8960"],
            "topography": ["C42.1", "C69.2", "C64.9"],
            "behaviour": ["3", "3", "3"],
        }
    )


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig", "cp1252"])
def test_files_in_other_encodings_are_detected_and_decoded(tmp_path, encoding):
    src = tmp_path / f"in-{encoding}.csv"
    _frame().to_csv(src, index=False, encoding=encoding, sep=";")
    out = tmp_path / "out.csv"
    summary = classify_csv(src, out)
    result = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert result["registre"].tolist() == _frame()["registre"].tolist()
    assert result["iccc_subgroup"].tolist() == ["Ia", "V", "VIa"]
    assert summary.rows == 3 and summary.classified == 3 and summary.delimiter == ";"


def test_undecodable_file_is_a_clear_file_error_and_writes_nothing(ccdp, tmp_path):
    src = tmp_path / "scan.csv"
    src.write_bytes(bytes(range(256)) * 64)
    out = tmp_path / "out.csv"
    proc = ccdp("classify", "--input", str(src), "--output", str(out), check=False)
    assert proc.returncode == 2
    assert f"{src}: cannot be decoded as text" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_missing_columns_name_the_file_and_the_columns(tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame({"morph": ["9836"], "topography": ["C42.1"]}).to_csv(src, index=False)
    with pytest.raises(ClassifyInputError, match=r"in.csv: missing column\(s\) 'morphology'"):
        classify_csv(src, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ClassifyInputError, match="the file is empty"):
        classify_csv(empty, tmp_path / "out.csv")
    header = tmp_path / "header.csv"
    header.write_text("morphology,topography,behaviour\n", encoding="utf-8")
    summary = classify_csv(header, tmp_path / "out.csv")
    assert summary.rows == 0


def test_big_file_goes_in_chunks_with_progress(tmp_path):
    n = 25_000
    frame = pd.DataFrame(
        {
            "morphology": ["9836", "9510", "bad", "8960"] * (n // 4),
            "topography": ["C42.1", "C69.2", "C42.1", "C64.9"] * (n // 4),
            "behaviour": ["3"] * n,
        }
    )
    src = tmp_path / "big.csv"
    frame.to_csv(src, index=False)
    calls: list[tuple[int, int]] = []
    summary = classify_csv(
        src, tmp_path / "out.csv", chunk_size=4000, on_progress=lambda d, t: calls.append((d, t))
    )
    assert len(calls) == 7 and calls[-1][0] == calls[-1][1] == src.stat().st_size
    assert summary.rows == n and summary.errors == n // 4
    result = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert len(result) == n and result["iccc_subgroup"].iloc[:4].tolist() == ["Ia", "V", "", "VIa"]


def test_input_without_output_is_an_error(ccdp):
    proc = ccdp("classify", "--input", str(EXAMPLE), check=False)
    assert proc.returncode == 2 and "needs --output" in proc.stderr


def test_readme_main_job_output_folder(tmp_path: Path):
    summary = classify_csv(EXAMPLE, tmp_path / "out" / "tumours-iccc.csv")
    assert summary.rows == 38 and summary.errors == 4


def test_classify_an_icdo32_code_as_a_registry_codes_it_since_2021(ccdp):
    proc = ccdp("classify", "-m", "9877/3", "-t", "C42.1")
    assert "Ib" in proc.stdout and "005" in proc.stdout and "Acute myeloid leukemias" in proc.stdout
